//! Rebuilding the schedule from the ledger when Redis lost its data (a failover
//! without persistence, a replaced node, an eviction): the ledger is the truth, Redis
//! only the schedule. Each shard of the schedule carries an epoch; a take that finds
//! it missing takes nothing and starts a rebuild of the shards that lost theirs, each
//! by one worker (`lua/recover.lua`): on a cluster, a node that lost its data costs
//! the rebuild of its shards only. A schedule
//! the ledger has never seen is new: it is recorded, and that is all. One it knows
//! was lost: the worker reads every waiting
//! message from the ledger's sparse waiting index (16 shards read in parallel, a page
//! per 1 MB: the cost grows with what waits, never with the table) and puts it back
//! with the attempts it has made. Accounts whose state was lost send no earlier than a
//! spacing after the loss was found (`lua/common.lua`), so none bursts; a message in
//! flight at the moment of loss may be sent again (its claim is its own worker's).

use std::time::Instant;

use futures::future::join_all;
use shared::ledger::WAIT_SHARDS;

use crate::ledger::Ledger;
use crate::schedule::{Payload, RecoveryStep, Schedule};

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub messages: u64,
    pub added: u64,
    pub pages: u64,
    pub millis: u64,
}

/// Rebuilds the schedule if this worker gets to (another may be at it); `None` when
/// there was nothing for it to do. A schedule the ledger has never seen (its first
/// start) is new, not lost: it is recorded and nothing is read. Without the ledger
/// there is nothing to read back: the epoch is set and what Redis lost is lost.
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
    let lost = match ledger {
        Some(l) => l.schedule_known(schedule.prefix()).await?,
        None => false,
    };
    if let (Some(ledger), true) = (ledger, lost) {
        step(RecoveryStep::Lost).await?;
        let renew = || step(RecoveryStep::Renew);
        for shard in join_all(WAIT_SHARDS.iter().map(|shard| recover_index_shard(schedule, ledger, shard, &mine, &renew))).await {
            let r = shard?;
            total.messages += r.messages;
            total.added += r.added;
            total.pages += r.pages;
        }
    } else if ledger.is_none() {
        tracing::warn!("the schedule is new or was lost, and LEDGER_ENABLED=false: nothing to rebuild it from");
    } else {
        tracing::info!("a new schedule: recorded in the ledger");
    }
    step(RecoveryStep::End).await?;
    total.millis = started.elapsed().as_millis() as u64;
    Ok(lost.then_some(total))
}

/// Reads one shard of the ledger's waiting index and puts back what belongs to the
/// schedule shards this worker rebuilds (`mine`); the others kept theirs.
async fn recover_index_shard<F: std::future::Future<Output = anyhow::Result<()>>>(
    schedule: &Schedule,
    ledger: &Ledger,
    shard: &str,
    mine: &[bool],
    renew: &impl Fn() -> F,
) -> anyhow::Result<Recovered> {
    let mut done = Recovered::default();
    let mut start = None;
    loop {
        let (messages, next) = ledger.waiting_page(shard, start).await?;
        done.pages += 1;
        done.messages += messages.len() as u64;
        let payloads: Vec<Payload> =
            messages.into_iter().filter(|(m, _)| mine[schedule.shard_of(&m.creator_id)]).map(|(message, attempts)| Payload { message, attempts }).collect();
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
