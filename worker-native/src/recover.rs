//! Rebuilding the schedule from the ledger when Redis lost its data (a failover without
//! persistence, a restart from an older snapshot, a replaced node, a flush): the ledger
//! is the truth, Redis only the schedule. Each shard of the schedule carries an epoch
//! naming the Redis process that holds it; a take that finds it missing or set by
//! another process takes nothing and starts a rebuild of those shards, each by one
//! worker (`lua/recover.lua`): on a cluster, a node that lost its data costs the rebuild
//! of its shards only.
//!
//! A rebuild first records the loss, so that no account sends earlier than a spacing
//! after it (`lua/common.lua`: sends made just before the loss are not in what survived),
//! then reads the ledger's sparse waiting index whole (16 shards in parallel, a page per
//! 1 MB: the cost grows with what waits, never with the table) and puts back every
//! waiting message with the attempts it has made (one already there is dropped as a
//! duplicate; a campaign's, read from its campaign's head in the index, by their common
//! prefix), every hold and every 429 pause. A new Redis looks the same as one that
//! lost everything, and is treated the same: safety does not hang on a marker, and an
//! empty index costs 16 small reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use shared::campaign;
use shared::ledger::{body_id, Body, WAIT_SHARDS};
use shared::queue::{AccountControl, Hold};
use tokio::sync::{watch, Notify};

use crate::ledger::{Ledger, Waiting};
use crate::schedule::{LossMarks, Payload, RecoveryStep, Schedule};

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub messages: u64,
    pub added: u64,
    /// Accounts held again (paused by their user) or paused again (a 429).
    pub accounts: u64,
    pub pages: u64,
    pub millis: u64,
}

/// Starts a rebuild in the background (a take found a shard's epoch missing); `done`
/// runs when it ends, and every shard is then looked at again at once.
pub fn spawn(schedule: Schedule, ledger: Option<Ledger>, wake: Arc<Notify>, done: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        match recover(&schedule, ledger.as_ref()).await {
            Ok(Some(r)) => tracing::warn!(
                messages = r.messages,
                added = r.added,
                accounts = r.accounts,
                pages = r.pages,
                ms = r.millis,
                "the schedule was missing or incomplete in Redis: rebuilt from the ledger"
            ),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %format!("{e:#}"), "the schedule was lost and could not be rebuilt yet; tried again at the next take"),
        }
        done();
        schedule.shards_woken("*"); // the schedule is complete again: take at once
        wake.notify_one();
    });
}

/// Takes the campaigns with nothing waiting out of the waiting index every `every` (a
/// rebuild does too, but may never come): the index then holds only what waits, and
/// their heads expire `LEDGER_TTL_DAYS` later (none has an expiry while it is in the
/// index: `machine::start_fan_out`). A head read per campaign in the index; every worker
/// does it, and a second time changes nothing.
pub async fn rest_campaigns(ledger: Ledger, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match rest_finished(&ledger).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(campaigns = n, "finished campaigns out of the waiting index"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "finished campaigns not taken out of the waiting index; again later"),
        }
    }
}

async fn rest_finished(ledger: &Ledger) -> anyhow::Result<u64> {
    let mut rested = 0;
    for shard in campaign::WAIT_SHARDS {
        let mut start = None;
        loop {
            let (heads, next) = ledger.campaign_heads_page(shard, start).await?;
            for (account, id) in heads {
                rested += u64::from(ledger.rest_campaign(&account, &id).await?);
            }
            match next {
                Some(key) => start = Some(key),
                None => break,
            }
        }
    }
    Ok(rested)
}

/// Rebuilds the shards that need it, if this worker gets to (another may be at it);
/// `None` when there was nothing for it to do. Without the ledger there is nothing to
/// read back: the loss is recorded, the epoch set, and what Redis lost is lost.
pub async fn recover(schedule: &Schedule, ledger: Option<&Ledger>) -> anyhow::Result<Option<Recovered>> {
    let token = format!("{:016x}", rand::random::<u64>());
    let begun = join_all((0..schedule.shard_count()).map(|k| schedule.recovery(RecoveryStep::Begin, &token, k))).await;
    let mut mine = vec![false; schedule.shard_count()];
    for (k, begun) in begun.into_iter().enumerate() {
        mine[k] = begun?;
    }
    let shards: Vec<usize> = (0..mine.len()).filter(|k| mine[*k]).collect();
    if shards.is_empty() {
        return Ok(None);
    }
    let step = |step: RecoveryStep| {
        let (shards, token) = (&shards, &token);
        async move {
            for r in join_all(shards.iter().map(|&k| schedule.recovery(step, token, k))).await {
                anyhow::ensure!(r?, "the rebuild took too long: another worker took it over");
            }
            Ok(())
        }
    };
    let started = Instant::now();
    let mut total = Recovered::default();
    // Without the ledger what Redis still holds is the only copy: kept.
    step(if ledger.is_some() { RecoveryStep::Lost } else { RecoveryStep::LostKeepingWhatIsLeft }).await?;
    match ledger {
        Some(ledger) => {
            let renew = || step(RecoveryStep::Renew);
            // The holds read back are applied in the ledger's order after this loss.
            let marks = schedule.loss_marks(shards.iter().copied()).await?.for_rebuild();
            let rebuild = Rebuild { schedule, ledger, mine: &mine, marks: &marks, renew: &renew };
            // Messages' shards and campaigns' together: the sooner the rebuild is done,
            // the fewer messages a campaign redelivered meanwhile adds a second time.
            let (messages, campaigns) = futures::join!(
                join_all(WAIT_SHARDS.iter().map(|shard| rebuild.index_shard(shard))),
                join_all(campaign::WAIT_SHARDS.iter().map(|shard| rebuild.campaign_shard(shard)))
            );
            for shard in messages.into_iter().chain(campaigns) {
                let r = shard?;
                total.messages += r.messages;
                total.added += r.added;
                total.accounts += r.accounts;
                total.pages += r.pages;
            }
        }
        None => tracing::warn!("the schedule is new or was lost, and LEDGER_ENABLED=false: nothing to rebuild it from"),
    }
    step(RecoveryStep::End).await?;
    total.millis = started.elapsed().as_millis() as u64;
    Ok(Some(total))
}

/// What a rebuild reads the waiting index with: the schedule it puts back into, the
/// ledger, which schedule shards are this worker's to rebuild (`mine`: the others keep
/// theirs), their losses as read after this rebuild's (for the holds it puts back), and
/// the renewal of its claim on them (called after each page).
struct Rebuild<'a, R> {
    schedule: &'a Schedule,
    ledger: &'a Ledger,
    mine: &'a [bool],
    marks: &'a LossMarks,
    renew: &'a R,
}

impl<R> Clone for Rebuild<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Rebuild<'_, R> {}

impl<'a, R: Fn() -> F, F: std::future::Future<Output = anyhow::Result<()>>> Rebuild<'a, R> {
    /// Reads one campaign shard of the ledger's waiting index (`shared::campaign::WAIT_SHARDS`)
    /// and puts back what waits of each campaign there whose account belongs to the
    /// schedule shards this worker rebuilds (`mine`), a page of its messages at a time (the
    /// rebuild renewed after each); a campaign with nothing waiting leaves the index.
    async fn campaign_shard(&self, shard: &str) -> anyhow::Result<Recovered> {
        let Rebuild { schedule, ledger, mine, renew, .. } = *self;
        let mut done = Recovered::default();
        let mut start = None;
        loop {
            let (heads, next) = ledger.campaign_heads_page(shard, start).await?;
            done.pages += 1;
            for (account, id) in heads.iter().filter(|(account, _)| mine[schedule.shard_of(account)]) {
                let (messages, added) = (AtomicU64::new(0), AtomicU64::new(0));
                ledger
                    .campaign_waiting(account, id, |payloads| {
                        let (messages, added) = (&messages, &added);
                        async move {
                            messages.fetch_add(payloads.len() as u64, Ordering::Relaxed);
                            for chunk in payloads.chunks(100) {
                                added.fetch_add(schedule.enqueue_payloads(chunk).await?.added, Ordering::Relaxed);
                            }
                            renew().await
                        }
                    })
                    .await?;
                done.messages += messages.into_inner();
                done.added += added.into_inner();
            }
            renew().await?;
            match next {
                Some(key) => start = Some(key),
                None => return Ok(done),
            }
        }
    }

    /// Reads one shard of the ledger's waiting index and puts back what belongs to the
    /// schedule shards this worker rebuilds (`mine`); the others kept theirs.
    async fn index_shard(&self, shard: &str) -> anyhow::Result<Recovered> {
        let Rebuild { schedule, ledger, mine, marks, renew } = *self;
        let mut done = Recovered::default();
        let mut start = None;
        // What a campaign's messages say, read once per shard (their items carry none).
        let mut campaigns: HashMap<(String, String), Option<Body>> = HashMap::new();
        loop {
            let (waiting, next) = ledger.waiting_page(shard, start).await?;
            done.pages += 1;
            let (mut payloads, mut holds, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            // The page's bodies, 100 to a read: a single message's own (used once, not kept),
            // a campaign's (kept for its other messages).
            let mut wanted: Vec<(String, String)> = waiting
                .iter()
                .filter_map(|w| match w {
                    Waiting::Message(Payload { message: m, .. }) if m.content.is_empty() => Some((m.creator_id.clone(), body_id(m).to_owned())),
                    _ => None,
                })
                .filter(|key| !campaigns.contains_key(key))
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            let mut read = ledger.bodies(&wanted).await?;
            // A hold is confirmed by the table itself: on AWS the index may still show one
            // released since (and the release, applied before this rebuild's loss, is not
            // here any more to refuse it).
            let held: Vec<String> = waiting
                .iter()
                .filter_map(|w| match w {
                    Waiting::Account(account, summary) if summary.paused && mine[schedule.shard_of(account)] => Some(account.clone()),
                    _ => None,
                })
                .collect();
            let mut confirmed = if held.is_empty() { HashMap::new() } else { ledger.summaries(&held).await? };
            for w in waiting {
                match w {
                    Waiting::Message(mut payload) if mine[schedule.shard_of(&payload.message.creator_id)] => {
                        let message = &mut payload.message;
                        done.messages += 1;
                        if message.content.is_empty() {
                            let key = (message.creator_id.clone(), body_id(message).to_owned());
                            let body = match message.campaign_id {
                                Some(_) => campaigns.entry(key.clone()).or_insert_with(|| read.remove(&key)).as_ref(),
                                None => read.get(&key),
                            };
                            match body {
                                Some(body) => body.fill(message),
                                // Held past its body's expiry (`shared::campaign::body_expiry`,
                                // `shared::ledger::single_body_expiry`): scheduled without
                                // content, it fails at its turn (never sent).
                                None => tracing::error!(message = %message.id, body = %key.1, "a waiting message's content expired"),
                            }
                        }
                        payloads.push(payload);
                    }
                    Waiting::Account(account, summary) if mine[schedule.shard_of(&account)] => {
                        let summary = confirmed.remove(&account).unwrap_or(summary);
                        let until = summary.rate_limited_until_ms.filter(|u| *u > now_ms);
                        if summary.paused {
                            holds.push(AccountControl { control: Hold::Pause, creator_id: account.clone(), at_ms: summary.hold_at_ms.unwrap_or(0) });
                        }
                        if let Some(until) = until {
                            pauses.push((account.clone(), until));
                        }
                        if !summary.paused && until.is_none() {
                            ledger.account_rested(&account).await?;
                        } else {
                            done.accounts += 1;
                        }
                    }
                    _ => {}
                }
            }
            // Holds and pauses first: a message put back must not find its account free.
            // Another loss since this rebuild's: another worker rebuilds (this one's
            // next renewal fails).
            anyhow::ensure!(!schedule.control(&holds, marks).await?.stale, "the schedule was lost again during its rebuild");
            schedule.pause_until(&pauses).await?;
            for chunk in payloads.chunks(100) {
                done.added += schedule.enqueue_payloads(chunk).await?.added;
            }
            renew().await?;
            match next {
                Some(key) => start = Some(key),
                None => return Ok(done),
            }
        }
    }
}
