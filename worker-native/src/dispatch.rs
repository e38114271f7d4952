//! Dispatch: lease due messages from the schedule, deliver them through the gateway
//! (at most `max_in_flight` at once), and record each outcome in the ledger and the
//! schedule, batched. Waits for the next due time or a wake-up, never busy-polls.
//!
//! An outcome is never dropped: the ledger is tried until it answers, and meanwhile
//! the leases of every message this worker holds are renewed, so that none is taken
//! and sent again by another worker. Backpressure stops new sends while it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::gateway::{Delivery, Gateway};
use crate::ledger::{Ledger, Outcome, Record};
use crate::metrics::Metrics;
use crate::schedule::{Completion, Schedule, Taken};

/// The settings dispatch needs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub max_in_flight: usize,
    pub take_batch: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub shutdown_grace: Duration,
    /// How long before its slot a message is taken at least, so that its ledger claim
    /// is done by then (`CLAIM_LEAD`; twice the last claim's time when that is longer).
    pub claim_lead: Duration,
}

/// The longest lead a slot is given for its claim, however slow the ledger (what is
/// taken ahead is committed, so the lead stays short).
pub const MAX_LEAD_MS: u64 = 1_000;

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

struct Delivered {
    taken: Taken,
    /// `None`: not handed to the gateway (its account met a 429 while it waited for
    /// its slot), given back.
    delivery: Option<Delivery>,
    at_ms: u64,
}

/// Accounts this worker saw answered 429, and until when: a message of theirs taken
/// ahead and waiting for its slot is given back instead of sent into the pause.
type Paused = Arc<Mutex<HashMap<String, Instant>>>;

/// Claims taken messages in the ledger before any is handed to the gateway: those it
/// refuses were canceled (or are done) and leave the schedule unsent; one whose claim
/// came back after its send deadline goes back to its queue (its slot is lost, not the
/// limit). Without the ledger everything is sendable. If the ledger cannot be reached,
/// the messages go back to their queues and `None` is returned.
async fn claim(ledger: Option<&Ledger>, schedule: &Schedule, taken: Vec<Taken>, redis_now: u64, taken_at: Instant) -> Option<Vec<Taken>> {
    let Some(ledger) = ledger else { return Some(taken) };
    let messages: Vec<&shared::message::QueueMessage> = taken.iter().map(|t| &t.payload.message).collect();
    let claimed = match ledger.claim(&messages).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), count = taken.len(), "ledger unreachable: messages not claimed go back to their queues");
            let back: Vec<Completion> = taken.into_iter().map(Completion::Release).collect();
            if let Err(e) = schedule.complete(&back).await {
                tracing::warn!(error = %e, "messages not given back; their leases expire");
            }
            return None;
        }
    };
    let redis_time = redis_now + taken_at.elapsed().as_millis() as u64;
    let mut claimed = claimed.into_iter().peekable();
    let (mut sendable, mut dropped) = (Vec::with_capacity(taken.len()), Vec::new());
    for (i, t) in taken.into_iter().enumerate() {
        if claimed.next_if_eq(&i).is_none() {
            dropped.push(Completion::Done(t));
        } else if redis_time > t.deadline_ms {
            dropped.push(Completion::Release(t));
        } else {
            sendable.push(t);
        }
    }
    if !dropped.is_empty() {
        let late = dropped.iter().filter(|c| matches!(c, Completion::Release(_))).count();
        if late > 0 {
            tracing::warn!(late, claim_ms = taken_at.elapsed().as_millis() as u64, "ledger claim slower than the take's lead: messages given back unsent");
        }
        tracing::info!(count = dropped.len() - late, "canceled or finished messages left unsent");
        if let Err(e) = schedule.complete(&dropped).await {
            // Their leases expire; the next take meets them again.
            tracing::warn!(error = %e, "unsent messages not given back yet");
        }
    }
    Some(sendable)
}

/// What the batches of one dispatcher share.
struct DispatchState<G> {
    schedule: Schedule,
    ledger: Option<Ledger>,
    gateway: Arc<G>,
    metrics: Arc<Metrics>,
    in_flight: Held,
    paused: Paused,
    /// How long recent claims took at most (ms, decaying): the lead of the next takes.
    last_claim_ms: AtomicU64,
    /// Until when (Unix ms) nothing is taken: the ledger could not claim.
    hold_until_ms: AtomicU64,
    /// A rebuild of a lost schedule is under way in this process.
    recovering: AtomicBool,
}

/// One take's messages: claimed, then each sent at its slot (they wait concurrently),
/// its outcome handed to the completer. Runs beside the dispatch loop, so that the
/// loop goes on taking while a claim is under way.
async fn send_batch<G: Gateway>(
    shared: Arc<DispatchState<G>>,
    taken: Vec<(Taken, OwnedSemaphorePermit)>,
    redis_now: u64,
    taken_at: Instant,
    tx: mpsc::Sender<Delivered>,
) {
    let (taken, mut permits): (Vec<Taken>, Vec<OwnedSemaphorePermit>) = taken.into_iter().unzip();
    let Some(sendable) = claim(shared.ledger.as_ref(), &shared.schedule, taken, redis_now, taken_at).await else {
        shared.hold_until_ms.store(now_ms() + 500, Ordering::Relaxed);
        return;
    };
    // The slowest recent claim, decaying: one slow answer keeps the lead up for a while.
    let claim_ms = taken_at.elapsed().as_millis() as u64;
    let _ = shared.last_claim_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| Some(claim_ms.max(prev * 9 / 10)));
    permits.truncate(sendable.len());
    let sends = sendable.into_iter().zip(permits).map(|(taken, permit)| {
        // Sent at its slot: the limit counted it there.
        let slot = tokio::time::Instant::from_std(taken_at) + Duration::from_millis(taken.slot_ms.saturating_sub(redis_now));
        shared.in_flight.lock().expect("in-flight lock").insert(taken.id.clone(), (taken.clone(), Instant::now()));
        let (shared, tx) = (shared.clone(), tx.clone());
        async move {
            tokio::time::sleep_until(slot).await;
            // Woken far past its deadline (the process was stopped or starved): its lease
            // may have expired and the message gone to another worker, and sent now it
            // could come closer than a window to the account's later sends. Given back
            // unsent. Within half the margin of it, it goes: that half is the delivery's
            // own jitter (lua/common.lua).
            let now = redis_now + taken_at.elapsed().as_millis() as u64;
            let stalled = now > taken.deadline_ms + shared.schedule.margin_ms() / 2;
            if stalled {
                tracing::warn!(id = %taken.id, late_ms = now - taken.deadline_ms, "woken past the send deadline (the process stalled): given back unsent");
            }
            let held = stalled || shared.paused.lock().expect("paused lock").get(&taken.account).is_some_and(|until| *until > Instant::now());
            let delivery = if held {
                None
            } else {
                let started = Instant::now();
                let delivery = shared.gateway.deliver(&taken.payload.message).await;
                shared.metrics.latency(started.elapsed());
                if let Delivery::Retry { rate_limited: true, retry_after, .. } = &delivery {
                    let until = Instant::now() + retry_after.unwrap_or(Duration::from_secs(1));
                    let mut paused = shared.paused.lock().expect("paused lock");
                    paused.retain(|_, u| *u > Instant::now());
                    paused.insert(taken.account.clone(), until);
                }
                Some(delivery)
            };
            let _ = tx.send(Delivered { taken, delivery, at_ms: now_ms() }).await;
            drop(permit);
        }
    });
    futures::future::join_all(sends).await;
}

impl<G: Gateway> Dispatcher<G> {
    /// Runs until `shutdown` turns true; then finishes or releases what is in flight.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Bounded: a delivery keeps its in-flight permit until its outcome is queued for
        // recording, so a slow ledger slows dispatch instead of piling up outcomes (and
        // letting their leases expire, which would send them twice).
        let (tx, rx) = mpsc::channel::<Delivered>(self.config.max_in_flight);
        // Every message taken and not yet completed in Redis, and when it was taken.
        let in_flight: Held = Arc::default();
        let completer =
            tokio::spawn(complete_loop(self.schedule.clone(), self.ledger.clone(), self.metrics.clone(), self.config.clone(), rx, in_flight.clone()));
        let (renew_stop, renew_stopped) = watch::channel(false);
        let renewer = tokio::spawn(renew_leases(self.schedule.clone(), in_flight.clone(), self.config.lease, renew_stopped));
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut redis_down_since: Option<Instant> = None;
        let shared = Arc::new(DispatchState {
            schedule: self.schedule.clone(),
            ledger: self.ledger.clone(),
            gateway: self.gateway.clone(),
            metrics: self.metrics.clone(),
            in_flight: in_flight.clone(),
            paused: Paused::default(),
            last_claim_ms: AtomicU64::new(0),
            hold_until_ms: AtomicU64::new(0),
            recovering: AtomicBool::new(false),
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
            // With the ledger, every slot leaves time to claim its message first: no slot
            // earlier than the configured lead, and messages taken further ahead (twice
            // the recent claims' time) when claims run slower than that.
            let last_claim_ms = shared.last_claim_ms.load(Ordering::Relaxed);
            let (lead_ms, horizon_ms) = match self.ledger {
                Some(_) => {
                    let lead = (self.config.claim_lead.as_millis() as u64).min(MAX_LEAD_MS);
                    (lead, lead.max(2 * last_claim_ms).min(MAX_LEAD_MS))
                }
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
            if let Some(theirs) = result.other_shards {
                // Workers with another SCHEDULE_SHARDS made this shard: they split accounts
                // otherwise, and both would send for one account. Send nothing.
                tracing::error!(
                    theirs,
                    ours = self.schedule.shard_count(),
                    "the schedule in Redis was made with another SCHEDULE_SHARDS: sending nothing; set the same on every worker"
                );
                sleep_or_shutdown(Duration::from_secs(5), &mut shutdown).await;
                continue;
            }
            if result.lost && !shared.recovering.swap(true, Ordering::Relaxed) {
                let (state, wake) = (shared.clone(), self.wake.clone());
                tokio::spawn(async move {
                    match crate::recover::recover(&state.schedule, state.ledger.as_ref()).await {
                        Ok(Some(r)) => tracing::warn!(
                            messages = r.messages,
                            added = r.added,
                            pages = r.pages,
                            ms = r.millis,
                            "Redis had lost the schedule: rebuilt from the ledger"
                        ),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "the schedule was lost and could not be rebuilt yet; tried again at the next take")
                        }
                    }
                    state.recovering.store(false, Ordering::Relaxed);
                    state.schedule.woken("*"); // the schedule is complete again: take at once
                    wake.notify_one();
                });
            }
            let taken_at = Instant::now();
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

        // Shutdown: let deliveries under way finish within the grace period, then give
        // back what is left unsent.
        let finished = tokio::time::timeout(self.config.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // Outcomes of what was delivered are recorded (and leave `in_flight`); what is
        // left was not delivered, and is given back.
        drop(tx);
        let _ = completer.await;
        let _ = renew_stop.send(true);
        let _ = renewer.await;
        let left: Vec<Completion> = in_flight.lock().expect("in-flight lock").drain().map(|(_, (t, _))| Completion::Release(t)).collect();
        if !left.is_empty() {
            tracing::warn!(count = left.len(), "grace period over: releasing unfinished deliveries back to their queues");
            retry_redis("release leases", || self.schedule.complete(&left), Some(Duration::from_secs(10))).await;
        }
    }
}

/// Messages taken and not yet completed in Redis, and when each was taken.
type Held = Arc<Mutex<HashMap<String, (Taken, Instant)>>>;

/// Renews the leases of messages held for more than a third of the lease (normally
/// none: an outcome is recorded within milliseconds; a slow or down ledger holds them).
async fn renew_leases(schedule: Schedule, held: Held, lease: Duration, mut stop: watch::Receiver<bool>) {
    let every = lease / 3;
    while !*stop.borrow() {
        sleep_or_shutdown(every, &mut stop).await;
        let old: Vec<Taken> = held.lock().expect("in-flight lock").values().filter(|(_, at)| at.elapsed() >= every).map(|(t, _)| t.clone()).collect();
        if old.is_empty() {
            continue;
        }
        match schedule.renew(&old, lease.as_millis() as u64).await {
            Ok(n) => tracing::warn!(held = old.len(), renewed = n, "outcomes still being recorded: leases renewed"),
            Err(e) => tracing::error!(error = %e, "leases not renewed"),
        }
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Exponential backoff with jitter for attempt `attempt` (1-based): uniform between
/// half and all of `base · 2^(attempt-1)`, capped at `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    Duration::from_millis(rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64))
}

/// Retries a Redis call until it succeeds (Redis outage: keep what we hold), or until
/// `limit` when given.
async fn retry_redis<F, Fut, T>(what: &str, mut f: F, limit: Option<Duration>) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                if !logged {
                    tracing::error!(error = %e, "{what}: Redis unreachable, holding on and retrying");
                    logged = true;
                }
                if limit.is_some_and(|l| started.elapsed() > l) {
                    tracing::error!("{what}: gave up; the leases will expire and the messages return to their queues");
                    return None;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Turns deliveries into ledger records and schedule completions, in batches.
async fn complete_loop(
    schedule: Schedule,
    ledger: Option<Ledger>,
    metrics: Arc<Metrics>,
    config: DispatchConfig,
    mut rx: mpsc::Receiver<Delivered>,
    held: Held,
) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let mut completions = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut tally = Tally::default();
        for Delivered { taken, delivery, at_ms } in batch.drain(..) {
            let Some(delivery) = delivery else {
                completions.push(Completion::Release(taken));
                continue;
            };
            let (completion, record) = settle(taken, delivery, at_ms, &config);
            tally.count(&record.outcome, &completion);
            completions.push(completion);
            records.push(record);
        }
        // The ledger first: if this process dies before the schedule hears of it, the
        // lease expires and the message is sent again, but its status is never lost.
        // Until it answers: `record` is safe to repeat, and the leases are renewed
        // meanwhile (`renew_leases`).
        if let Some(ledger) = &ledger {
            let mut delay = Duration::from_millis(100);
            let mut tries = 0u32;
            while let Err(e) = ledger.record(&records).await {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(20) {
                    tracing::error!(error = %format!("{e:#}"), count = records.len(), tries, "ledger not updated: holding these outcomes and trying again");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        retry_redis("record outcomes", || schedule.complete(&completions), None).await;
        {
            let mut held = held.lock().expect("in-flight lock");
            for c in &completions {
                held.remove(&c.taken().id);
            }
        }
        metrics.processed(tally.sent);
        metrics.failed(tally.failed);
        metrics.retried(tally.retried);
        metrics.deferred(tally.paused);
    }
}

/// Outcomes of one batch, for the metrics.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    failed: u64,
    retried: u64,
    paused: u64,
}

impl Tally {
    fn count(&mut self, outcome: &Outcome, completion: &Completion) {
        match (outcome, completion) {
            (Outcome::Sent { .. }, _) => self.sent += 1,
            (Outcome::Failed { .. }, _) => self.failed += 1,
            (Outcome::Retrying { .. }, Completion::Pause { .. }) => {
                self.retried += 1;
                self.paused += 1;
            }
            (Outcome::Retrying { .. }, _) => self.retried += 1,
        }
    }
}

/// What a delivery means for the schedule and the ledger.
fn settle(mut taken: Taken, delivery: Delivery, at_ms: u64, config: &DispatchConfig) -> (Completion, Record) {
    let mut attempts = taken.payload.attempts + 1;
    let at = shared::time::rfc3339_ms(at_ms);
    let message = taken.payload.message.clone();
    let (completion, outcome) = match delivery {
        Delivery::Sent => (Completion::Done(taken), Outcome::Sent { at }),
        // A rate limit is the account's state, not the message's fault: the account
        // pauses for as long as the gateway asks, and the message uses up no attempt,
        // however often it meets a 429.
        Delivery::Retry { reason, rate_limited: true, retry_after } => {
            attempts = taken.payload.attempts;
            let delay = retry_after.unwrap_or_else(|| backoff(attempts + 1, config.retry_base, config.retry_max));
            (Completion::Pause { taken, delay_ms: delay.as_millis() as u64 }, Outcome::Retrying { error: reason })
        }
        Delivery::Retry { reason, .. } if attempts < config.max_attempts => {
            taken.payload.attempts = attempts;
            let delay_ms = backoff(attempts, config.retry_base, config.retry_max).as_millis() as u64;
            (Completion::Retry { taken, delay_ms }, Outcome::Retrying { error: reason })
        }
        Delivery::Retry { reason, .. } => (Completion::Done(taken), Outcome::Failed { at, error: format!("{reason} (gave up after {attempts} attempts)") }),
        Delivery::Failed { reason } => (Completion::Done(taken), Outcome::Failed { at, error: reason }),
    };
    (completion, Record { message, attempts, outcome })
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
        }
    }

    fn taken(attempts: u32) -> Taken {
        let m: shared::message::QueueMessage = serde_json::from_value(serde_json::json!({
            "id": "018bcfe5-6800-7fff-bfff-ffffffffffff", "creatorId": "a", "recipientId": "fan",
            "content": "hi", "priority": 5, "acceptedAt": "2026-11-25T00:00:00.000Z"
        }))
        .unwrap();
        Taken::leased(crate::schedule::Payload { message: m, attempts })
    }

    /// Review defect 7: a 429 on the last attempt failed the message for good and never
    /// paused the account.
    #[test]
    fn a_429_pauses_the_account_and_uses_up_no_attempt() {
        let limited = Delivery::Retry { reason: "429".into(), rate_limited: true, retry_after: Some(Duration::from_secs(2)) };
        let (completion, record) = settle(taken(2), limited, 0, &config());
        assert!(matches!(completion, Completion::Pause { delay_ms: 2000, ref taken } if taken.payload.attempts == 2), "{completion:?}");
        assert!(matches!(record.outcome, Outcome::Retrying { .. }) && record.attempts == 2, "{record:?}");
        // A passing failure on the last attempt still gives up.
        let busy = Delivery::Retry { reason: "503".into(), rate_limited: false, retry_after: None };
        let (completion, record) = settle(taken(2), busy, 0, &config());
        assert!(matches!(completion, Completion::Done(_)) && matches!(record.outcome, Outcome::Failed { .. }) && record.attempts == 3);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..100 {
            let b1 = backoff(1, base, max);
            assert!(b1 >= Duration::from_millis(50) && b1 <= base);
            let b3 = backoff(3, base, max);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            assert!(backoff(30, base, max) <= max);
        }
    }
}
