//! Delivery: each claimed message waits until it may go (its slot, where the limit
//! counted it, or an idle account's as soon as it is claimed), then goes through the
//! gateway; its outcome goes to the completer. It is given back unsent
//! when its account met a 429 while it waited (in this worker), when the process was
//! stalled past its deadline, or when the worker is shutting down. A delivery that has
//! started is never abandoned: its outcome is always handed on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{claim::claim, now_ms, DispatchState};
use crate::gateway::{Delivery, Gateway};
use crate::schedule::Taken;

/// A taken message's end in this worker: what the gateway said, or `None` when it was
/// given back unsent.
pub(super) struct Delivered {
    pub taken: Taken,
    pub delivery: Option<Delivery>,
    /// When it went to the gateway (Redis time, as its slot); `None`: it did not (given
    /// back, or failed before: its content expired).
    pub began_ms: Option<u64>,
    /// When the gateway answered (this machine's clock: the ledger's `sentAt`).
    pub at_ms: u64,
}

/// Accounts this worker saw answered 429, and until when: a message of theirs taken
/// ahead and waiting for its slot is given back instead of sent into the pause.
#[derive(Default)]
pub(super) struct RateLimited(Mutex<HashMap<String, Instant>>);

impl RateLimited {
    fn until(&self, account: &str, until: Instant) {
        let mut paused = self.0.lock().expect("rate-limited lock");
        paused.retain(|_, u| *u > Instant::now());
        paused.insert(account.to_owned(), until);
    }

    fn is(&self, account: &str) -> bool {
        self.0.lock().expect("rate-limited lock").get(account).is_some_and(|until| *until > Instant::now())
    }
}

/// One take's messages: claimed, then each sent at its slot (they wait concurrently),
/// its outcome handed to the completer. Runs beside the take loop, so that the loop goes
/// on taking while a claim is under way.
pub(super) async fn send_batch<G: Gateway>(
    shared: Arc<DispatchState<G>>,
    taken: Vec<(Taken, OwnedSemaphorePermit)>,
    redis_now: u64,
    taken_at: Instant,
    tx: mpsc::Sender<Delivered>,
) {
    let (taken, mut permits): (Vec<Taken>, Vec<OwnedSemaphorePermit>) = taken.into_iter().unzip();
    let Some(sendable) = claim(&shared, taken, redis_now, taken_at).await else {
        shared.hold_until_ms.store(now_ms() + 500, Ordering::Relaxed);
        return;
    };
    // The slowest recent claim, decaying: one slow answer keeps the lead up for a while.
    let claim_ms = taken_at.elapsed().as_millis() as u64;
    tracing::debug!(claimed = sendable.len(), claim_ms, "claimed");
    let _ = shared.last_claim_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| Some(claim_ms.max(prev * 9 / 10)));
    permits.truncate(sendable.len());
    let sends = sendable.into_iter().zip(permits).map(|(taken, permit)| {
        let from = tokio::time::Instant::from_std(taken_at) + Duration::from_millis(taken.from_ms.saturating_sub(redis_now));
        let (shared, tx) = (shared.clone(), tx.clone());
        async move {
            let mut stopping = shared.stopping.clone();
            let prepared = shared.gateway.prepare(&taken.payload.message);
            let (stopped, prepared) = tokio::select! {
                (_, prepared) = futures::future::join(tokio::time::sleep_until(from), prepared) => (false, prepared),
                _ = stopping.wait_for(|s| *s) => (true, Ok(())),
            };
            if let Err(e) = &prepared {
                tracing::warn!(id = %taken.id, account = %taken.account, error = %format!("{e:#}"), "not ready to send (the gateway's preparation failed): given back unsent");
            }
            // Woken past its deadline (the process was stopped or starved): its lease may
            // have expired and the message gone to another worker, and sent now it could
            // come closer than a window to the account's later sends. Given back unsent.
            // The deadline is half the margin after its slot: the other half is for the
            // way to the provider (lua/take.lua).
            let now = redis_now + taken_at.elapsed().as_millis() as u64;
            let stalled = !stopped && now > taken.deadline_ms;
            if stalled {
                tracing::warn!(id = %taken.id, late_ms = now - taken.deadline_ms, "woken past the send deadline (the process stalled): given back unsent");
            }
            // What came of it, and when it went to the gateway if it did.
            let (delivery, began_ms) = if stopped || stalled || prepared.is_err() || shared.rate_limited.is(&taken.account) {
                (None, None)
            } else if taken.payload.message.content.is_empty() {
                // Its campaign's content expired before it could go (`recover.rs`).
                (Some(Delivery::Failed { reason: "its campaign's content expired before it could be sent".into() }), None)
            } else {
                let started = Instant::now();
                tracing::debug!(id = %taken.id, account = %taken.account, slot_ms = taken.slot_ms, late_ms = now as i64 - taken.slot_ms as i64, "sending");
                let delivery = shared.gateway.deliver(&taken.payload.message).await;
                shared.metrics.latency(started.elapsed());
                match &delivery {
                    Delivery::RateLimited { retry_after, .. } => {
                        shared.rate_limited.until(&taken.account, Instant::now() + retry_after.unwrap_or(Duration::from_secs(1)))
                    }
                    // Held once its outcome is recorded: what waits for a slot meanwhile
                    // is given back, not sent into the refusal.
                    Delivery::AccountRefused { .. } => shared.rate_limited.until(&taken.account, Instant::now() + Duration::from_secs(10)),
                    _ => {}
                }
                (Some(delivery), Some(now))
            };
            let _ = tx.send(Delivered { taken, delivery, began_ms, at_ms: now_ms() }).await;
            drop(permit);
        }
    });
    futures::future::join_all(sends).await;
}
