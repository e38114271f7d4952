//! Dispatch: the path of a message from the schedule to its recorded outcome, one room
//! per step.
//!
//! 1. **take** (this module): lease the due messages from the schedule, each a short
//!    lead before its slot (an idle account's as soon as it can be claimed), as many as
//!    there are free in-flight permits; wait for the next due time or a wake-up, never
//!    busy-poll; start a rebuild when Redis lost the schedule (`crate::recover`).
//! 2. [`claim`]: claim them in the ledger (a cancel needs a message still `queued`): a
//!    refused one leaves the schedule unsent and gives its slot back.
//! 3. [`deliver`]: each waits for its slot and goes through the gateway, unless its
//!    account met a 429 meanwhile, the process stalled past its deadline, or the worker
//!    is shutting down: then it is given back unsent.
//! 4. [`complete`]: each outcome is recorded in the ledger (until it answers) and then in
//!    the schedule, in batches; [`leases`] renews the leases of what waits for that.
//!
//! An outcome is never dropped: a delivery under way at shutdown is awaited and
//! recorded; meanwhile the leases of every message this worker holds are renewed, so
//! that none is taken and sent again by another worker. Backpressure: a delivery keeps
//! its in-flight permit until its outcome is queued for recording.

mod claim;
mod complete;
mod deliver;
mod leases;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::credential::CredentialLimit;
use crate::gateway::Gateway;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::schedule::{Completion, Schedule, MAX_LEAD_MS};

use crate::now_ms;
pub use complete::outcome_of;
use deliver::{send_batch, Delivered, RateLimited};
use leases::InFlight;

/// The settings dispatch needs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub max_in_flight: usize,
    pub take_batch: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long shutdown waits for deliveries under way before it says it still waits.
    pub shutdown_grace: Duration,
    /// How long before its slot a busy account's message is taken, so that its ledger
    /// claim is done by then (`CLAIM_LEAD`; twice the recent claims' time when that is
    /// longer). An idle account's goes once claimed ([`leads`]).
    pub claim_lead: Duration,
    /// The gateway credential's limit, when one is set (`GATEWAY_RATE_LIMIT_MAX`).
    pub credential: Option<CredentialLimit>,
}

/// Wakes the take loop when `done` gave a slot back (a message that will not be sent
/// now: refused, released, waiting): that slot is due at once, before the loop's planned
/// wake-up, and a run of them would otherwise each leave its account idle until then.
fn wake_for_refunds(done: &[Completion], wake: &Notify) {
    if done.iter().any(Completion::refunds) {
        wake.notify_one();
    }
}

/// Longest sleep without looking at the schedule (a safety net: wake-ups and due
/// times normally end the wait first).
const MAX_IDLE: Duration = Duration::from_secs(1);

pub struct Dispatcher<G> {
    pub schedule: Schedule,
    pub gateway: Arc<G>,
    pub ledger: Option<Ledger>,
    pub metrics: Arc<Metrics>,
    pub config: DispatchConfig,
    pub wake: Arc<Notify>,
}

/// What the batches of one dispatcher share.
struct DispatchState<G> {
    schedule: Schedule,
    ledger: Option<Ledger>,
    gateway: Arc<G>,
    metrics: Arc<Metrics>,
    config: DispatchConfig,
    in_flight: InFlight,
    rate_limited: RateLimited,
    /// How long recent claims took at most (ms, decaying): the lead of the next takes.
    last_claim_ms: AtomicU64,
    /// Until when (Unix ms) nothing is taken: the ledger could not claim.
    hold_until_ms: AtomicU64,
    /// A rebuild of a lost schedule is under way in this process.
    recovering: AtomicBool,
    /// Turns true at shutdown: messages still waiting for their slot are given back.
    stopping: watch::Receiver<bool>,
    /// Wakes the take loop (a slot given back is due before its planned wake-up).
    wake: Arc<Notify>,
    credential: Option<CredentialLimit>,
}

impl<G: Gateway> Dispatcher<G> {
    /// Runs until `shutdown` turns true; then gives back what waits for its slot, and
    /// records the outcome of every delivery under way.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Bounded: a delivery keeps its in-flight permit until its outcome is queued for
        // recording, so a slow ledger slows dispatch instead of piling up outcomes (and
        // letting their leases expire, which would send them twice).
        let (tx, rx) = mpsc::channel::<Delivered>(self.config.max_in_flight);
        let in_flight = InFlight::default();
        let completer = tokio::spawn(complete::run(
            self.schedule.clone(),
            self.ledger.clone(),
            self.metrics.clone(),
            self.config.clone(),
            rx,
            in_flight.clone(),
            self.wake.clone(),
        ));
        let (renew_stop, renew_stopped) = watch::channel(false);
        let renewer = tokio::spawn(leases::renew(self.schedule.clone(), in_flight.clone(), self.config.lease, renew_stopped));
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut redis_down_since: Option<Instant> = None;
        let shared = Arc::new(DispatchState {
            schedule: self.schedule.clone(),
            ledger: self.ledger.clone(),
            gateway: self.gateway.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            in_flight: in_flight.clone(),
            rate_limited: RateLimited::default(),
            last_claim_ms: AtomicU64::new(0),
            hold_until_ms: AtomicU64::new(0),
            recovering: AtomicBool::new(false),
            stopping: shutdown.clone(),
            wake: self.wake.clone(),
            credential: self.config.credential.clone(),
        });

        while !*shutdown.borrow() {
            while tasks.try_join_next().is_some() {}
            let available = permits.available_permits();
            if available == 0 {
                tokio::select! {
                    p = permits.clone().acquire_owned() => drop(p),
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let hold = shared.hold_until_ms.load(Ordering::Relaxed).saturating_sub(now_ms());
            if hold > 0 {
                sleep_or_shutdown(Duration::from_millis(hold), &mut shutdown).await;
                continue;
            }
            let want = available.min(self.config.take_batch);
            let (lead_ms, horizon_ms) = match self.ledger {
                Some(_) => leads(self.config.claim_lead.as_millis() as u64, shared.last_claim_ms.load(Ordering::Relaxed)),
                None => (0, 0),
            };
            let result = match self.schedule.take(want, self.config.lease.as_millis() as u64, lead_ms, horizon_ms).await {
                Ok(r) => {
                    if let Some(since) = redis_down_since.take() {
                        tracing::info!(down_for_ms = since.elapsed().as_millis() as u64, "Redis is back; dispatch resumes");
                    }
                    r
                }
                Err(e) => {
                    // Without Redis the limit cannot be known: send nothing until it is back.
                    if redis_down_since.is_none() {
                        tracing::error!(error = %e, "Redis unreachable: sending nothing until it is back");
                        redis_down_since = Some(Instant::now());
                    }
                    sleep_or_shutdown(Duration::from_millis(250), &mut shutdown).await;
                    continue;
                }
            };
            if let Some(their_shards) = result.other_shards {
                // Workers with another SCHEDULE_SHARDS made this shard: they split accounts
                // otherwise, and both would send for one account. Send nothing.
                tracing::error!(
                    their_shards,
                    ours = self.schedule.shard_count(),
                    "the schedule in Redis was made with another SCHEDULE_SHARDS: sending nothing; set the same on every worker"
                );
                sleep_or_shutdown(Duration::from_secs(5), &mut shutdown).await;
                continue;
            }
            if result.lost && !shared.recovering.swap(true, Ordering::Relaxed) {
                let state = shared.clone();
                crate::recover::spawn(self.schedule.clone(), self.ledger.clone(), self.wake.clone(), move || state.recovering.store(false, Ordering::Relaxed));
            }
            let taken_at = result.answered_at;
            let got = result.taken.len();
            if got > 0 {
                // Each message holds an in-flight permit from its take (there are enough:
                // `want` was what was free) until its outcome is queued for recording.
                let mut batch = Vec::with_capacity(got);
                for taken in result.taken {
                    batch.push((taken, permits.clone().acquire_owned().await.expect("semaphore open")));
                }
                tasks.spawn(send_batch(shared.clone(), batch, result.now_ms, taken_at, tx.clone()));
            }
            if got < want {
                // Nothing more is due: sleep until the next due time or a wake-up.
                let wait = match result.next_due_ms {
                    Some(due) => Duration::from_millis(due.saturating_sub(result.now_ms + horizon_ms)).min(MAX_IDLE),
                    None => MAX_IDLE,
                };
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }

        // Shutdown: messages waiting for their slot are given back (they see `stopping`);
        // deliveries under way end within the gateway's timeout, and each outcome is
        // queued for recording. Nothing is aborted: an aborted delivery's outcome would
        // be lost, and the message sent again by another worker.
        let started = Instant::now();
        loop {
            match tokio::time::timeout(self.config.shutdown_grace, tasks.join_next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(tasks = tasks.len(), waited_ms = started.elapsed().as_millis() as u64, "shutdown: still waiting for deliveries under way")
                }
            }
        }
        drop(tx);
        let _ = completer.await;
        let _ = renew_stop.send(true);
        let _ = renewer.await;
        // Nothing should be left: each taken message was delivered, given back or refused.
        let left: Vec<Completion> = in_flight.drain().into_iter().map(Completion::Release).collect();
        if !left.is_empty() {
            tracing::warn!(count = left.len(), "messages still held at shutdown: given back to their queues");
            crate::retry::until_ok("give back leases", Duration::from_millis(100), Duration::from_secs(2), Some(Duration::from_secs(10)), || {
                self.schedule.complete(&left)
            })
            .await;
        }
    }
}

/// With the ledger, every slot leaves time to claim its message first. A busy account's
/// next slot is set by its earlier sends: its message is taken `claim_lead` ahead of it
/// (further, twice the recent claims' time, when claims run slower), so that it goes at
/// its slot. An idle account's message goes as soon as it is claimed (before its slot:
/// lua/take.lua); its slot is twice the recent claims' time away (the configured lead
/// until a claim was timed), not the whole lead, so that the account's next slots
/// follow soon after. Returns (lead, horizon) for the take, in ms.
fn leads(claim_lead_ms: u64, last_claim_ms: u64) -> (u64, u64) {
    let recent = 2 * last_claim_ms;
    let lead = if last_claim_ms == 0 { claim_lead_ms } else { recent.max(MIN_LEAD_MS) };
    (lead.min(MAX_LEAD_MS), claim_lead_ms.max(recent).min(MAX_LEAD_MS))
}

/// The shortest lead: a claim answered in no time still leaves the message a few ms
/// between its claim and its slot.
const MIN_LEAD_MS: u64 = 5;

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_account_waits_only_for_its_claim() {
        assert_eq!(leads(200, 0), (200, 200), "no claim timed yet: the configured lead");
        assert_eq!(leads(200, 6), (12, 200), "claims of 6 ms: the idle slot 12 ms away, the busy taken 200 ms ahead");
        assert_eq!(leads(200, 1), (MIN_LEAD_MS, 200));
        assert_eq!(leads(200, 300), (600, 600), "claims slower than the lead: both further ahead");
        assert_eq!(leads(200, 5_000), (MAX_LEAD_MS, MAX_LEAD_MS));
    }
}
