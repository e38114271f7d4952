//! The claim: taken messages are claimed in the ledger before any is handed to the
//! gateway (`shared::ledger::machine::claim`). A cancel needs a message still `queued`,
//! so a message is sent or canceled, never both; a claim is a lease, so a message the
//! schedule handed out twice (a Redis loss, a failover) is not sent twice while its
//! first delivery is under way.

use std::time::{Duration, Instant};

use super::DispatchState;
use crate::credential::{Ask, CredentialLimit, Grant};
use crate::ledger::{Claim, Outcome, Record, ToClaim};
use crate::schedule::{Completion, Taken};

/// After this, a message whose claim another worker holds is looked at again (beyond
/// that claim's end).
const DEFER_MARGIN_MS: u64 = 100;

/// Claims `taken` (each for `lease_ms` after its slot) and returns those to send. The
/// others leave the schedule: refused (canceled or finished: their slot goes back to
/// their account), held by another worker's claim (looked at again after it), or
/// claimed too late for their slot (given back, and unclaimed). Without the ledger
/// everything is sendable. `None` when the ledger cannot be reached: everything goes
/// back to its queue.
pub(super) async fn claim<G>(state: &DispatchState<G>, taken: Vec<Taken>, redis_now: u64, taken_at: Instant) -> Option<Vec<Taken>> {
    let (schedule, lease_ms) = (&state.schedule, state.config.lease.as_millis() as u64);
    // A message this worker holds already (the schedule handed it out again after a
    // loss) waits: its first copy is being sent.
    let (taken, twice): (Vec<Taken>, Vec<Taken>) = taken.into_iter().partition(|t| state.in_flight.hold(t));
    let mut left: Vec<Completion> = twice.into_iter().map(|t| Completion::Defer { taken: t, delay_ms: lease_ms }).collect();
    // The credential's turn before the claim: a message that waits for it costs no write,
    // and goes back at once (its account's pause must end at its turn, not after the claim).
    let taken = match &state.credential {
        Some(credential) => {
            let (taken, mut waiting) = admit(credential, taken, || redis_now + taken_at.elapsed().as_millis() as u64).await;
            let Some(taken) = taken else {
                waiting.append(&mut left); // all back, in one round trip
                give_back(state, waiting).await;
                return None;
            };
            give_back(state, waiting).await;
            taken
        }
        None => taken,
    };
    let Some(ledger) = state.ledger.as_ref() else {
        give_back(state, left).await;
        return Some(taken);
    };
    let messages: Vec<ToClaim> = taken.iter().map(|t| ToClaim { message: &t.payload.message, slot_ms: t.slot_ms, maybe_sent: t.payload.maybe_sent }).collect();
    let now = || redis_now + taken_at.elapsed().as_millis() as u64;
    let verdicts = match ledger.claim(&messages, now(), lease_ms).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), count = taken.len(), "ledger unreachable: messages not claimed go back to their queues");
            left.extend(taken.into_iter().map(Completion::Release));
            give_back(state, left).await;
            return None;
        }
    };
    let redis_time = now();
    let (mut sendable, mut late) = (Vec::with_capacity(taken.len()), Vec::new());
    let mut canceled_campaigns: Vec<(String, String)> = Vec::new();
    for (t, verdict) in taken.into_iter().zip(verdicts) {
        match verdict {
            Claim::Claimed if redis_time > t.deadline_ms => late.push(t),
            Claim::Claimed => sendable.push(t),
            Claim::CampaignCanceled => {
                if let Some(cid) = t.payload.message.campaign_id.clone() {
                    let key = (t.account.clone(), cid);
                    if !canceled_campaigns.contains(&key) {
                        canceled_campaigns.push(key);
                    }
                }
                left.push(Completion::Refused(t));
            }
            Claim::Finished => {
                tracing::debug!(id = %t.id, account = %t.account, "claim refused: finished or canceled");
                left.push(Completion::Refused(t))
            }
            Claim::Held { until_ms } => {
                tracing::debug!(id = %t.id, account = %t.account, held_for_ms = until_ms.saturating_sub(redis_time), "claim held by another worker: deferred");
                left.push(Completion::Defer { taken: t, delay_ms: until_ms.saturating_sub(redis_time) + DEFER_MARGIN_MS })
            }
        }
    }
    if !late.is_empty() {
        tracing::warn!(
            late = late.len(),
            claim_ms = taken_at.elapsed().as_millis() as u64,
            "ledger claim slower than the take's lead: messages given back unsent"
        );
        let released: Vec<Record> =
            late.iter().map(|t| Record { message: t.payload.message.clone(), attempts: t.payload.attempts, outcome: Outcome::Released, went: None }).collect();
        // Unclaimed, so that a cancel finds them `queued`; should the ledger fail now,
        // their claim lapses at its lease and the next take claims them again.
        if let Err(e) = ledger.record(&released).await {
            tracing::warn!(error = %format!("{e:#}"), "late claims not released; they lapse at their lease");
        }
        left.extend(late.into_iter().map(Completion::Release));
    }
    let refused = left.iter().filter(|c| matches!(c, Completion::Refused(_))).count();
    if refused > 0 {
        tracing::info!(count = refused, "canceled or finished messages left unsent");
    }
    give_back(state, left).await;
    for (creator, campaign) in canceled_campaigns {
        // Its notice is on its way; meanwhile what waits of it would be taken and
        // refused one by one, the account's other messages behind it (src/cancel.rs).
        let (schedule, ledger, at) = (schedule.clone(), ledger.clone(), shared::time::rfc3339_ms(redis_time));
        tokio::spawn(async move {
            if let Err(e) = crate::cancel::cancel_campaign_of(&schedule, &ledger, &creator, &campaign, &at).await {
                tracing::warn!(error = %format!("{e:#}"), %campaign, "a canceled campaign not taken off the schedule yet: its notice will");
            }
        });
    }
    Some(sendable)
}

/// Asks the gateway credential's limit for each message's send time: one granted a time
/// goes then (its window narrowed to what the grant allows); one whose turn comes later
/// waits for it, its account paused until then; one whose grant came back too late to go
/// is given back. Returns those to claim, and those to give back; `None` to claim when
/// the credential's Redis does not answer (everything goes back).
async fn admit(credential: &CredentialLimit, taken: Vec<Taken>, clock: impl Fn() -> u64) -> (Option<Vec<Taken>>, Vec<Completion>) {
    let asks: Vec<Ask> = taken.iter().map(|t| Ask { account: &t.account, from_ms: t.from_ms, deadline_ms: t.deadline_ms }).collect();
    let grants = match credential.grant(&asks, &clock).await {
        Ok(grants) => grants,
        Err(e) => {
            tracing::error!(error = %e, count = taken.len(), "the credential's limit did not answer: messages go back to their queues");
            return (None, taken.into_iter().map(Completion::Release).collect());
        }
    };
    let (mut admitted, mut back) = (Vec::with_capacity(taken.len()), Vec::new());
    for (mut t, grant) in taken.into_iter().zip(grants) {
        match grant {
            Grant::Go { at_ms, by_ms } => {
                t.from_ms = t.from_ms.max(at_ms);
                t.deadline_ms = t.deadline_ms.min(by_ms);
                if t.from_ms <= t.deadline_ms {
                    admitted.push(t);
                } else {
                    back.push(Completion::Release(t)); // the call took its window: the grant is lost, not the limit
                }
            }
            Grant::Wait { until_ms } => {
                tracing::debug!(id = %t.id, account = %t.account, until_ms, "waits for its turn at the credential's limit");
                back.push(Completion::Wait { taken: t, until_ms });
            }
        }
    }
    (Some(admitted), back)
}

/// Completes what will not be sent now in the schedule, and lets go of it (waking the
/// take loop for the slots given back).
async fn give_back<G>(state: &DispatchState<G>, left: Vec<Completion>) {
    if left.is_empty() {
        return;
    }
    // Should Redis not answer, their leases expire and the next take meets them again.
    crate::retry::until_ok("give back unsent messages", Duration::from_millis(50), Duration::from_millis(500), Some(Duration::from_secs(2)), || {
        state.schedule.complete(&left)
    })
    .await;
    for c in &left {
        state.in_flight.release(&c.taken().id);
    }
    super::wake_for_refunds(&left, &state.wake);
}
