//! The outbox of webhook events: an outcome's event is written in the same ledger
//! transaction as the outcome it tells (`Ledger::record`), for the account's endpoints
//! that asked for it (which accounts have endpoints is read every
//! `WEBHOOK_ENDPOINTS_REFRESH`: an account's first endpoint hears of the outcomes
//! recorded from then on), so that no event is lost when a worker dies or Redis loses its
//! data, and none tells of an outcome that was not recorded. The worker that wrote it
//! holds it (a lease on the item) and delivers it at once; each endpoint that has it
//! (or never will: gone, given up) comes off the item, and with the last the item
//! leaves the waiting index (it expires with its TTL).
//! Every `WEBHOOK_SWEEP_INTERVAL` each worker reads the waiting index's event shards (two
//! read units, and a conditional write per event waiting: many only while receivers
//! fail) and
//! takes over the events whose lease ran out: a worker that died, or stopped mid-retry.
//! So each event reaches each endpoint at least once, with one id on every attempt
//! (a receiver drops repeats by `webhook-id`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use shared::time::rfc3339_ms;
use shared::webhook::{Delivery, DeliveryState, Endpoint, Event, Pending, ENDPOINTS_SHARD, EVENT_SHARDS, EVENT_SK_PREFIX};
use tokio::sync::{mpsc, watch};

use crate::events::EventSink;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::webhook::{Answer, Deliverer, Retry};

/// Delivers the events this worker wrote as they come, and every `sweep_every` those
/// whose lease ran out, until `stop`; every `refresh_every` (and at once) it reads
/// again which accounts have endpoints.
#[allow(clippy::too_many_arguments)] // the outbox's parts and settings, each named at its one call
pub async fn run(
    ledger: Ledger,
    deliverer: Deliverer,
    sink: Arc<EventSink>,
    mut written: mpsc::UnboundedReceiver<Pending>,
    sweep_every: Duration,
    refresh_every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let courier = Courier { ledger: ledger.clone(), deliverer, metrics, lease_ms: sink.lease_ms };
    // The first sweep one interval after the start: what a worker that stopped left is
    // not due before its lease ends anyway.
    let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(refresh_every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sweeping = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = refresh.tick() => {
                if let Err(e) = refresh_hooked(&ledger, &sink).await {
                    tracing::warn!(error = %format!("{e:#}"), "accounts with webhook endpoints not read; again later");
                }
            }
            Some(pending) = written.recv() => {
                tokio::spawn(courier.clone().deliver(pending));
            }
            _ = sweep.tick() => {
                // In the background, one at a time: a long sweep holds up neither the
                // events written meanwhile nor the stop.
                if !sweeping.swap(true, Ordering::AcqRel) {
                    let (courier, sweeping) = (courier.clone(), sweeping.clone());
                    tokio::spawn(async move {
                        match courier.take_over().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(events = n, "webhook events taken over (their worker stopped or died)"),
                            Err(e) => tracing::warn!(error = %format!("{e:#}"), "webhook events not swept; again later"),
                        }
                        sweeping.store(false, Ordering::Release);
                    });
                }
            }
        }
    }
}

/// Reads which accounts have endpoints (the waiting index's endpoint shard, keys only).
async fn refresh_hooked(ledger: &Ledger, sink: &EventSink) -> anyhow::Result<()> {
    let mut hooked = HashSet::new();
    let mut start = None;
    loop {
        let (keys, next) = ledger.keys_page(ENDPOINTS_SHARD, start).await?;
        hooked.extend(keys.into_iter().map(|(account, _)| account));
        match next {
            Some(key) => start = Some(key),
            None => break,
        }
    }
    sink.set_hooked(hooked);
    Ok(())
}

/// What a delivery needs, cloned into each delivery's task.
#[derive(Clone)]
struct Courier {
    ledger: Ledger,
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
    /// How long a worker holds an event it delivers (renewed before each wait).
    lease_ms: u64,
}

impl Courier {
    /// Takes over the events in the index whose lease ran out, each delivered as soon as it
    /// is leased to this worker; how many.
    async fn take_over(&self) -> anyhow::Result<usize> {
        let (ledger, lease_ms) = (&self.ledger, self.lease_ms);
        let mut taken = 0;
        for shard in EVENT_SHARDS {
            let mut start = None;
            loop {
                let (events, next) = ledger.keys_page(shard, start).await?;
                let now = now_ms();
                for (account, sort_key) in events {
                    let Some(id) = sort_key.strip_prefix(EVENT_SK_PREFIX) else { continue };
                    if let Some(pending) = ledger.lease_event(&account, id, now, now + lease_ms).await? {
                        taken += 1;
                        tokio::spawn(self.clone().deliver(pending));
                    }
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        Ok(taken)
    }

    /// Delivers one event to each endpoint still to have it, all at once, each on its own
    /// retry schedule (the lease renewed before each wait).
    async fn deliver(self, pending: Pending) {
        let Pending { account, event, endpoints: to } = pending;
        let alone = to.len() == 1;
        join_all(to.into_iter().map(|id| {
            let (courier, account, event) = (self.clone(), account.clone(), event.clone());
            async move {
                // Each endpoint the event was written for, read by its key, consistently
                // (there unless deleted; its secret as rotated): a read unit, where a
                // query of the account's endpoints costs the same and reads all of them.
                match courier.ledger.endpoint(&account, &id).await {
                    Ok(endpoint) => courier.deliver_to(account, event, id, endpoint, alone).await,
                    // Its lease runs out and a sweep takes it again.
                    Err(e) => {
                        tracing::warn!(event = %event.id, endpoint = %id, error = %format!("{e:#}"), "webhook event not delivered: its endpoint not read")
                    }
                }
            }
        }))
        .await;
    }

    /// Delivers an event to one endpoint (`None`: deleted since), then takes that endpoint
    /// off the event, with what became of it in the delivery log.
    async fn deliver_to(self, account: String, event: Event, id: String, endpoint: Option<Endpoint>, alone: bool) {
        let (ledger, lease_ms, metrics) = (&self.ledger, self.lease_ms, &self.metrics);
        // Its age counts from now: an event taken over was due up to a lease and a sweep
        // earlier; a redelivered one, only now.
        let under_way = metrics.webhook_begun(now_ms());
        let (answer, attempts) = match endpoint {
            None => (Err("endpoint deleted"), 0),
            Some(e) if e.disabled.is_some() => (Err("endpoint disabled"), 0),
            Some(e) => {
                let renew = |retry: Retry| {
                    let (ledger, metrics, account, event_id, endpoint_id) = (ledger.clone(), metrics.clone(), account.clone(), event.id.clone(), id.clone());
                    async move {
                        let now = now_ms();
                        let log = Delivery {
                            state: if retry.waiting && retry.attempts == 0 { DeliveryState::Pending } else { DeliveryState::Retrying },
                            attempts: retry.attempts,
                            // (A wait for the endpoint's turn is not an attempt.)
                            last_attempt_at: (!retry.waiting).then(|| rfc3339_ms(now)),
                            last_answer: Some(retry.reason),
                            next_attempt_at: Some(rfc3339_ms(now + retry.delay_ms)),
                        };
                        if !retry.waiting {
                            metrics.webhook_attempt(false);
                        }
                        match ledger.renew_event_lease(&account, &event_id, now + retry.delay_ms + lease_ms, &endpoint_id, &log).await {
                            Ok(()) => true,
                            Err(err) => {
                                tracing::info!(event = %event_id, error = %format!("{err:#}"), "webhook event's lease not renewed: left to the sweep");
                                false
                            }
                        }
                    }
                };
                let (answer, attempts) = deliver_one(ledger, &self.deliverer, &account, e, &event, false, renew).await;
                if matches!(answer, Answer::Delivered | Answer::Gone | Answer::Failed { .. }) {
                    metrics.webhook_attempt(answer == Answer::Delivered);
                }
                let answer = match answer {
                    Answer::Delivered => Ok(()),
                    Answer::Gone => Err("endpoint gone (410): disabled"),
                    Answer::Withdrawn => Err("endpoint deleted or disabled meanwhile"),
                    // Another worker delivers it (or will, once the lease this one could not
                    // renew runs out): this one leaves the event as it is.
                    Answer::Yielded => return metrics.webhook_done(under_way),
                    Answer::Failed { reason, .. } => {
                        tracing::warn!(event = %event.id, endpoint = %id, %reason, "webhook event given up after the last attempt");
                        Err("given up after the last attempt")
                    }
                };
                (answer, attempts)
            }
        };
        let log = Delivery {
            state: if answer.is_ok() { DeliveryState::Delivered } else { DeliveryState::Failed },
            attempts,
            last_attempt_at: (attempts > 0).then(|| rfc3339_ms(now_ms())),
            last_answer: Some(answer.err().unwrap_or("delivered").to_owned()),
            next_attempt_at: None,
        };
        match answer {
            Ok(()) => tracing::debug!(event = %event.id, endpoint = %id, "webhook event delivered"),
            Err(outcome) => tracing::warn!(event = %event.id, endpoint = %id, outcome, "webhook event not delivered"),
        }
        if let Err(err) = ledger.event_done_for(&account, &event.id, &id, &log, alone).await {
            // Its lease runs out and a sweep delivers it again (the same id).
            tracing::warn!(event = %event.id, endpoint = %id, error = %format!("{err:#}"), "webhook delivery not recorded");
        }
        metrics.webhook_done(under_way);
    }
}

/// One endpoint's delivery of one event, retried on the schedule (`before_wait` first:
/// whether this worker still holds the event) while the endpoint stays: it is read
/// again before each retry (deleted or disabled: not tried again; a secret rotated
/// meanwhile signs the next attempt; a failed read keeps the one read first). A 410
/// disables it. A test event (`test`) goes to a disabled endpoint too: its receiver is
/// checked before the endpoint is enabled again.
pub(crate) async fn deliver_one<W: std::future::Future<Output = bool>>(
    ledger: &Ledger,
    deliverer: &Deliverer,
    account: &str,
    endpoint: Endpoint,
    event: &Event,
    test: bool,
    before_wait: impl FnMut(Retry) -> W,
) -> (Answer, u32) {
    let enabled = |e: Endpoint| if test { Endpoint { disabled: None, ..e } } else { e };
    let first = enabled(endpoint);
    let current = || {
        let (first, id) = (first.clone(), first.id.clone());
        async move {
            match ledger.endpoint(account, &id).await {
                Ok(now) => now.map(enabled),
                Err(_) => Some(first),
            }
        }
    };
    let (answer, attempts) = deliverer.deliver(first.clone(), event, before_wait, current).await;
    if answer == Answer::Gone {
        if let Err(err) = ledger.disable_endpoint(account, &first.id, "the receiver answered 410 (gone)").await {
            tracing::warn!(endpoint = %first.id, error = %format!("{err:#}"), "webhook endpoint not marked disabled");
        }
    }
    (answer, attempts)
}
