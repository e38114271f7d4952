//! A campaign's cancel, wherever the worker learns of it: its notice in the queue
//! (`ingest.rs`), or a claim refused because of it before the notice came
//! (`dispatch/claim.rs`). What still waits leaves the schedule at once (else each of
//! its messages would be taken, refused by its claim and its slot given back, one by
//! one, the account's other messages waiting behind them), then each waiting message is
//! marked `canceled` in the ledger. Safe to repeat.

use shared::campaign::CampaignItem;

use crate::ledger::Ledger;
use crate::schedule::Schedule;

/// Messages per step when a campaign's messages leave the schedule one by one.
const DROP_CHUNK: usize = 1000;

/// Takes a canceled campaign off the schedule and cancels its waiting messages.
pub async fn cancel_campaign(schedule: &Schedule, ledger: &Ledger, c: &CampaignItem, at: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut waiting = schedule.cancel_campaign(&c.campaign).await.context("Redis")?;
    let (canceled, unfinished) = ledger.cancel_waiting(c, at).await.context("ledger")?;
    // A rebuild of the schedule from the ledger puts a campaign's waiting messages back
    // one by one, not as its list: those leave too, once canceled (or finished). One
    // claimed, or maybe sent, stays: it is claimed again and sent or recorded.
    let off: Vec<_> = c.campaign.messages().enumerate().filter(|(i, _)| !unfinished.contains(i)).map(|(_, m)| m).collect();
    for chunk in off.chunks(DROP_CHUNK) {
        waiting += schedule.drop_canceled(chunk).await.context("Redis")?;
    }
    tracing::info!(campaign = %c.campaign.id, waiting, canceled, "campaign canceled");
    Ok(())
}

/// The same for a campaign a claim found canceled, from one of its messages: read from
/// the ledger first (its recipients are in its body).
pub async fn cancel_campaign_of(schedule: &Schedule, ledger: &Ledger, creator_id: &str, campaign_id: &str, at: &str) -> anyhow::Result<()> {
    match ledger.campaign(creator_id, campaign_id).await? {
        Some(c) => cancel_campaign(schedule, ledger, &c, at).await,
        None => Ok(()),
    }
}
