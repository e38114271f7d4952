//! Completion: what each delivery means for the ledger and the schedule (the retry
//! policy: [`outcome_of`]), recorded in batches, the ledger first: if this process dies
//! before the schedule hears of an outcome, the lease expires and the message is sent
//! again, but its status is never lost. The ledger is tried until it answers (a record
//! is safe to repeat) while the leases are renewed (`leases`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::deliver::Delivered;
use super::leases::InFlight;
use super::DispatchConfig;
use crate::gateway::Delivery;
use crate::ledger::{Ledger, Outcome, Record};
use crate::metrics::Metrics;
use crate::retry::{jittered, until_ok};
use crate::schedule::{Completion, Schedule, Taken};

/// Turns deliveries into ledger records and schedule completions, in batches.
pub(super) async fn run(
    schedule: Schedule,
    ledger: Option<Ledger>,
    metrics: Arc<Metrics>,
    config: DispatchConfig,
    mut rx: mpsc::Receiver<Delivered>,
    held: InFlight,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let mut completions = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut counts = OutcomeCounts::default();
        for Delivered { taken, delivery, began_ms, at_ms } in batch.drain(..) {
            let (completion, record) = match delivery {
                Some(delivery) => outcome_of(taken, delivery, began_ms, at_ms, &config),
                // Claimed, then given back unsent: unclaimed, so that a cancel finds it `queued`.
                None => {
                    let record = Record { message: taken.payload.message.clone(), attempts: taken.payload.attempts, outcome: Outcome::Released, went: None };
                    (Completion::Release(taken), record)
                }
            };
            counts.count(&record.outcome);
            completions.push(completion);
            records.push(record);
        }
        if let Some(ledger) = &ledger {
            let what = format!("ledger not updated: holding {} outcomes", records.len());
            until_ok(&what, Duration::from_millis(100), Duration::from_secs(5), None, || async { ledger.record(&records).await.map_err(|e| format!("{e:#}")) })
                .await;
        }
        hold_refused_accounts(&schedule, ledger.as_ref(), &records).await;
        until_ok("record outcomes in Redis", Duration::from_millis(100), Duration::from_secs(2), None, || schedule.complete(&completions)).await;
        for c in &completions {
            held.release(&c.taken().id);
        }
        super::wake_for_refunds(&completions, &wake);
        metrics.processed(counts.sent);
        metrics.failed(counts.failed);
        metrics.retried(counts.retried);
        metrics.deferred(counts.rate_limited);
    }
}

/// Holds each account whose credentials the gateway refused (a vendor's 401/403), before
/// its message goes back to the schedule: in the ledger (the summary's hold, with the
/// reason `GET /status` shows), then in the schedule, as a user's pause made now. The
/// user's resume (a newer control) releases it once the connection is fixed.
async fn hold_refused_accounts(schedule: &Schedule, ledger: Option<&Ledger>, records: &[Record]) {
    let mut held: Vec<(&str, &str)> = Vec::new();
    for r in records {
        if let Outcome::Held { reason } = &r.outcome {
            if !held.iter().any(|(a, _)| *a == r.message.creator_id) {
                held.push((&r.message.creator_id, reason));
            }
        }
    }
    for (account, reason) in held {
        let at_ms = super::now_ms();
        tracing::warn!(account, reason, "the gateway refused the account's credentials: the account is held until resumed");
        // The ledger first (a newer control, such as the user's resume, wins), then
        // the schedule, in the ledger's order.
        let control = shared::queue::AccountControl { control: shared::queue::Hold::Pause, creator_id: account.to_owned(), at_ms };
        let check = || async {
            let applied = match ledger {
                Some(ledger) => ledger.hold(account, at_ms, reason).await?,
                None => true,
            };
            Ok(if applied { vec![control.clone()] } else { vec![] })
        };
        until_ok(&format!("hold account {account}"), Duration::from_millis(100), Duration::from_secs(5), None, || async {
            schedule.control_checked(&[account], check).await.map_err(|e| format!("{e:#}"))
        })
        .await;
    }
}

/// Outcomes of one batch, for the metrics.
#[derive(Debug, Default)]
struct OutcomeCounts {
    sent: u64,
    failed: u64,
    retried: u64,
    rate_limited: u64,
}

impl OutcomeCounts {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Sent { .. } => self.sent += 1,
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::RateLimited { .. } => {
                self.retried += 1;
                self.rate_limited += 1;
            }
            Outcome::Retrying { .. } => self.retried += 1,
            Outcome::Released | Outcome::Held { .. } => {}
        }
    }
}

/// What a delivery means for the schedule and the ledger: sent; a passing failure tried
/// again after a jittered backoff while attempts remain (one without an answer marks the
/// message as maybe sent: it is no longer cancelable); a 429 pausing the account for its
/// `Retry-After` without using an attempt; failed for good. It went to the gateway at
/// `began_ms` (Redis time; `None`: it failed before) and was answered at `at_ms`.
pub fn outcome_of(mut taken: Taken, delivery: Delivery, began_ms: Option<u64>, at_ms: u64, config: &DispatchConfig) -> (Completion, Record) {
    let mut attempts = taken.payload.attempts + 1;
    let at = shared::time::rfc3339_ms(at_ms);
    let message = taken.payload.message.clone();
    let went = began_ms.map(|began| (taken.slot_ms, began));
    let (completion, outcome) = match delivery {
        Delivery::Sent { gateway_id } => (Completion::Done(taken), Outcome::Sent { at, gateway_id }),
        // A rate limit is the account's state, not the message's fault: the account
        // pauses for as long as the gateway asks, and the message uses up no attempt,
        // however often it meets a 429.
        Delivery::RateLimited { reason, retry_after } => {
            attempts = taken.payload.attempts;
            let delay = retry_after.unwrap_or_else(|| jittered(attempts + 1, config.retry_base, config.retry_max));
            let delay_ms = delay.as_millis() as u64;
            (Completion::Pause { taken, delay_ms }, Outcome::RateLimited { error: reason, until_ms: at_ms + delay_ms })
        }
        Delivery::Retry { reason } | Delivery::Unknown { reason } if attempts >= config.max_attempts => {
            (Completion::Done(taken), Outcome::Failed { at, error: format!("{reason} (gave up after {attempts} attempts)") })
        }
        Delivery::Retry { reason } => {
            taken.payload.attempts = attempts;
            let delay_ms = jittered(attempts, config.retry_base, config.retry_max).as_millis() as u64;
            let maybe_sent = taken.payload.maybe_sent;
            (Completion::Retry { taken, delay_ms }, Outcome::Retrying { error: reason, maybe_sent })
        }
        Delivery::Unknown { reason } => {
            taken.payload.attempts = attempts;
            taken.payload.maybe_sent = true;
            let delay_ms = jittered(attempts, config.retry_base, config.retry_max).as_millis() as u64;
            (Completion::Retry { taken, delay_ms }, Outcome::Retrying { error: reason, maybe_sent: true })
        }
        Delivery::Failed { reason } => (Completion::Done(taken), Outcome::Failed { at, error: reason }),
        // Not the message's fault: it waits, with no attempt used, while its account is
        // held (`hold_refused_accounts`).
        Delivery::AccountRefused { reason } => {
            attempts = taken.payload.attempts;
            (Completion::Release(taken), Outcome::Held { reason })
        }
    };
    (completion, Record { message, attempts, outcome, went })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DispatchConfig {
        DispatchConfig {
            max_in_flight: 8,
            take_batch: 8,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            claim_lead: Duration::ZERO,
            credential: None,
        }
    }

    fn taken(attempts: u32) -> Taken {
        let m: shared::message::QueueMessage = serde_json::from_value(serde_json::json!({
            "id": "018bcfe5-6800-7fff-bfff-ffffffffffff", "creatorId": "a", "recipientId": "fan",
            "content": "hi", "priority": 5, "acceptedAt": "2026-11-25T00:00:00.000Z"
        }))
        .unwrap();
        Taken::leased(crate::schedule::Payload { message: m, attempts, maybe_sent: false })
    }

    /// A 429 on the last attempt must pause the account and use up no attempt (it once
    /// failed the message for good and never paused the account).
    #[test]
    fn a_429_pauses_the_account_and_uses_up_no_attempt() {
        let limited = Delivery::RateLimited { reason: "429".into(), retry_after: Some(Duration::from_secs(2)) };
        let (completion, record) = outcome_of(taken(2), limited, Some(0), 1000, &config());
        assert!(matches!(completion, Completion::Pause { delay_ms: 2000, ref taken } if taken.payload.attempts == 2), "{completion:?}");
        assert!(matches!(record.outcome, Outcome::RateLimited { until_ms: 3000, .. }) && record.attempts == 2, "{record:?}");
        // A passing failure on the last attempt still gives up.
        let busy = Delivery::Retry { reason: "503".into() };
        let (completion, record) = outcome_of(taken(2), busy, Some(0), 0, &config());
        assert!(matches!(completion, Completion::Done(_)) && matches!(record.outcome, Outcome::Failed { .. }) && record.attempts == 3);
    }

    /// No answer: tried again, and from then on the message may have been sent (its
    /// payload and its ledger item say so: it is no longer cancelable).
    #[test]
    fn no_answer_makes_a_message_maybe_sent() {
        let (completion, record) = outcome_of(taken(0), Delivery::Unknown { reason: "timed out".into() }, Some(0), 0, &config());
        assert!(matches!(completion, Completion::Retry { ref taken, .. } if taken.payload.maybe_sent && taken.payload.attempts == 1), "{completion:?}");
        assert!(matches!(record.outcome, Outcome::Retrying { maybe_sent: true, .. }));
        let (completion, _) = outcome_of(taken(0), Delivery::Retry { reason: "503".into() }, Some(0), 0, &config());
        assert!(matches!(completion, Completion::Retry { ref taken, .. } if !taken.payload.maybe_sent));
    }
}
