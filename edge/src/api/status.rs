//! `GET /status`: the queue as a whole and this account's own backlog.

use futures_util::future::join;
use shared::api::{AccountState, Health, HealthStatus, Processing, SendWindow, StatusReport};

use super::now_rfc3339;
use crate::error::ApiError;
use crate::http::ApiResponse;
use crate::platform::Platform;
use crate::services::Ctx;
use crate::{ledger, queue};

pub async fn status<P: Platform>(ctx: &Ctx<'_, P>, account: &str) -> Result<ApiResponse, ApiError> {
    let (queue, summary) = join(queue::queue_state(ctx), ledger::summary(ctx, account)).await;
    let (queue, summary) = (queue?, summary?);
    let config = ctx.config();
    let health = if !config.rate_limiter_enabled {
        Health { status: HealthStatus::Degraded, message: "sending is paused: RATE_LIMITER_ENABLED is not true".into() }
    } else if queue.dlq_count > 0 {
        Health { status: HealthStatus::Degraded, message: format!("{} message(s) in the dead-letter queue", queue.dlq_count) }
    } else {
        Health { status: HealthStatus::Healthy, message: "queue and ledger reachable".into() }
    };
    let now_ms = ctx.p.now_ms();
    let meter = config.rate.meter(&summary.recent_sends, now_ms, config.rate.default_margin_ms());
    let window = SendWindow {
        limit: config.rate.max,
        window_ms: config.rate.window_ms,
        sent_in_window: meter.in_window,
        next_send_at: (!summary.paused).then(|| shared::time::rfc3339_ms(meter.next_send_ms.max(summary.rate_limited_until_ms.unwrap_or(0)))),
        recent_sends: summary.recent_sends.iter().copied().map(shared::time::rfc3339_ms).collect(),
    };
    let report = StatusReport {
        queue,
        processing: Processing {
            estimated_time_seconds: config.rate.drain_seconds(summary.queued),
            rate_limit: config.rate.describe(),
            last_processed_at: summary.last_sent_at_ms.map(shared::time::rfc3339_ms),
        },
        account: AccountState {
            backlog: summary.queued,
            sent: summary.sent,
            failed: summary.failed,
            paused: summary.paused,
            paused_reason: summary.hold_reason.filter(|_| summary.paused),
            vendor_account_id: summary.vendor_account_id,
            rate_limited_until: summary.rate_limited_until_ms.filter(|&until| until > now_ms).map(shared::time::rfc3339_ms),
            window,
        },
        health,
        timestamp: now_rfc3339(ctx),
    };
    Ok(ApiResponse::json(200, &report))
}
