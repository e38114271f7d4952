//! `POST /send`: validate, then write the message to SQS and its ledger item
//! concurrently (a mass message: its campaign's item, then one queue message naming
//! it), and answer with each message's place in the account's backlog (see
//! [`crate::position`]).

use futures_util::future::{join, join3};
use shared::api::{MassAccepted, MassEntry, SendAccepted};
use shared::campaign::{self, Campaign, CampaignItem, CampaignRef};
use shared::error::ErrorCode;
use shared::ledger::{LedgerItem, MessageStatus, Summary};
use shared::message::{Recipients, SendRequest};
use shared::validation::validate_send;

use super::{require_enabled, taken_anyway};
use crate::aws::AwsError;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::idempotency::{self, Claim, Origin};
use crate::platform::Platform;
use crate::services::Ctx;
use crate::{ledger, queue};

pub async fn send<P: Platform>(ctx: &Ctx<'_, P>, request: &ApiRequest, account: &str) -> Result<ApiResponse, ApiError> {
    require_enabled(ctx)?;
    let idempotency_key = idempotency::parse_key(request.header("idempotency-key")).map_err(|e| ApiError::invalid(vec![e]))?;
    let (raw, body) = super::json_body(ctx, request).await?;
    let send = validate_send(body, ctx.p.now_ms(), ctx.config().max_recipients).map_err(ApiError::invalid)?;

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

/// Queues a valid request: one message, or a mass message as one campaign. A keyed
/// request's ids and acceptance time come from its claim (`origin`), so that every
/// attempt of it queues the same ids.
async fn accept<P: Platform>(ctx: &Ctx<'_, P>, account: &str, send: &SendRequest, origin: Option<Origin>) -> Result<ApiResponse, ApiError> {
    let now_ms = ctx.p.now_ms();
    let accepted = Accepted {
        now_ms,
        at_ms: origin.map_or(now_ms, |o| o.at_ms),
        // A campaign's item lives until LEDGER_TTL_DAYS after its `sendAt` (its messages'
        // outcomes push it on); a message's item has no expiry while it waits.
        campaign_expires_at: shared::ledger::expiry(send.send_at_ms.unwrap_or(0).max(now_ms), ctx.config().ledger_ttl_days),
        seed: origin.map_or_else(
            || {
                let mut random = [0u8; 8];
                ctx.p.fill_random(&mut random);
                random
            },
            |o| o.seed,
        ),
        resumed: origin.is_some_and(|o| o.resumed),
        // Scheduled messages wait for `sendAt`, then go at the account's rate like others.
        status: if send.send_at_ms.is_some() { MessageStatus::Scheduled } else { MessageStatus::Queued },
    };
    match &send.recipients {
        Recipients::One(recipient) => accept_one(ctx, account, send, recipient, &accepted).await,
        Recipients::Many(_) => accept_campaign(ctx, account, send, &accepted).await,
    }
}

/// What every message of one accepted request shares.
struct Accepted {
    now_ms: u64,
    at_ms: u64,
    campaign_expires_at: u64,
    seed: [u8; 8],
    resumed: bool,
    status: MessageStatus,
}

impl Accepted {
    /// Where the `i`-th message of the request stands: its place in the account's
    /// backlog (after `ahead`) and when it should go, at the account's rate and not
    /// before `sendAt`.
    fn place<P: Platform>(&self, ctx: &Ctx<'_, P>, send: &SendRequest, ahead: &Result<Summary, AwsError>, i: u64) -> (u64, String) {
        let (ahead, last_sent) = match ahead {
            Ok(s) => (s.queued, s.last_sent_at_ms),
            Err(_) => (0, None),
        };
        let rate = ctx.config().rate;
        let position = ahead + 1 + i;
        let estimate = rate.estimated_send_ms(position, last_sent, self.now_ms);
        let estimate = send.send_at_ms.map_or(estimate, |at| estimate.max(at + rate.offset_ms(i, rate.default_margin_ms())));
        (position, shared::time::rfc3339_ms(estimate))
    }
}

/// One message: its item is a conditional put, which never overwrites what the worker
/// wrote, so the queue and ledger writes go at once.
async fn accept_one<P: Platform>(ctx: &Ctx<'_, P>, account: &str, send: &SendRequest, recipient: &str, a: &Accepted) -> Result<ApiResponse, ApiError> {
    let accepted_at = shared::time::rfc3339_ms(a.at_ms);
    let item = LedgerItem::queued(send.to_queue_message(shared::id::uuid_v7(a.at_ms, 0, a.seed), account, recipient, &accepted_at));
    let body_expires_at = shared::ledger::single_body_expiry(send.send_at_ms.unwrap_or(0).max(a.now_ms), ctx.config().ledger_ttl_days);
    let (queued, written, summary) =
        join3(queue::enqueue(ctx, &item.message), ledger::put_new(ctx, &item, body_expires_at), backlog(ctx, account, 1, a.now_ms)).await;
    if let Err(e) = &written {
        // The worker writes the item again when it takes the message from the queue.
        ctx.p.log_error(&format!("ledger item not written: {e}"));
    }
    if let Err(e) = queued {
        if !taken_anyway(ctx, &e, ledger::delete_unqueued(ctx, account, &item.message.id).await) {
            ctx.edge.positions.release(account, 1);
            return Err(e.into());
        }
    }
    log_unread(ctx, &summary);
    let (queue_position, estimated_send_time) = a.place(ctx, send, &summary, 0);
    Ok(ApiResponse::json(202, &SendAccepted { success: true, message_id: item.message.id, status: a.status, queue_position, estimated_send_time }))
}

/// A mass message: the campaign's items (content, settings, recipients), then one queue
/// message naming it, whatever the number of recipients; the worker fans it out. The
/// answer lists every recipient's message id, derived from the campaign's.
async fn accept_campaign<P: Platform>(ctx: &Ctx<'_, P>, account: &str, send: &SendRequest, a: &Accepted) -> Result<ApiResponse, ApiError> {
    let accepted_at = shared::time::rfc3339_ms(a.at_ms);
    let c = Campaign::new(send, campaign::campaign_id(a.at_ms, a.seed), account, &accepted_at);
    let start_ms = send.send_at_ms.unwrap_or(0).max(a.now_ms);
    let body_expires_at = campaign::body_expiry(start_ms, c.recipients.len() as u64, ctx.config().rate, ctx.config().ledger_ttl_days);
    let item = CampaignItem::new(c, a.campaign_expires_at, body_expires_at);
    let count = item.total;
    let (written, summary) = join(ledger::put_campaign(ctx, &item), backlog(ctx, account, count, a.now_ms)).await;
    // The item goes first: the worker reads the campaign from it when the queue names it.
    let reference = CampaignRef { campaign: item.campaign.id.clone(), creator_id: account.to_owned(), cancel: false };
    let queued = match written {
        Ok(()) => queue::campaign(ctx, &reference, send.priority).await,
        Err(e) => Err(e),
    };
    if let Err(e) = queued {
        // A request taken over may have queued it the first time: its item stays, for the
        // client's next try.
        if a.resumed || !taken_anyway(ctx, &e, ledger::delete_unqueued_campaign(ctx, account, &item.campaign.id).await) {
            ctx.edge.positions.release(account, count);
            return Err(e.into());
        }
    }
    log_unread(ctx, &summary);
    let messages: Vec<MassEntry> = item
        .campaign
        .recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| {
            let (queue_position, estimated_send_time) = a.place(ctx, send, &summary, i as u64);
            MassEntry {
                recipient_id: recipient.clone(),
                message_id: campaign::message_id(&item.campaign.id, i as u32),
                status: a.status,
                queue_position,
                estimated_send_time,
            }
        })
        .collect();
    Ok(ApiResponse::json(202, &MassAccepted { success: true, campaign_id: reference.campaign, status: a.status, count: messages.len(), messages }))
}

fn log_unread<P: Platform>(ctx: &Ctx<'_, P>, summary: &Result<Summary, AwsError>) {
    if let Err(e) = summary {
        ctx.p.log_error(&format!("summary not read: {e}"));
    }
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
