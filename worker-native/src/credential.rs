//! The gateway credential's limit (`GATEWAY_RATE_LIMIT_MAX` per `GATEWAY_RATE_LIMIT_WINDOW`):
//! a vendor limits the requests of each API key, across every account that sends
//! through it, on top of OnlyFans' limit per account. Each taken message asks for a
//! send time before it is claimed (one round trip per take, whatever its size, to the
//! credential's own slot in Redis, shared by every worker; the rule is stated once in
//! `lua/credential.lua`). A message granted a time within its own window goes then; one
//! whose turn comes later goes back to its queue, its account waiting for that turn,
//! which stays reserved for it.

use std::sync::Arc;

use redis::Script;

use crate::connection::RedisConn;
use shared::rate::RateLimit;

/// The credential's limit in one place: its keys, its spacing and what a send may lag.
#[derive(Clone)]
pub struct CredentialLimit {
    conn: RedisConn,
    state: String,
    reserved: String,
    spacing_ms: f64,
    late_ms: u64,
    floor_ms: u64,
    script: Arc<Script>,
}

/// A message's answer from the credential (ms, on the clock of the caller's `now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Goes at `at_ms`, and no later than `by_ms`.
    Go { at_ms: u64, by_ms: u64 },
    /// Its turn is at `until_ms` (kept for its account): it waits.
    Wait { until_ms: u64 },
}

/// One message asking: its account, and when it may go (earliest, latest).
pub struct Ask<'a> {
    pub account: &'a str,
    pub from_ms: u64,
    pub deadline_ms: u64,
}

impl std::fmt::Debug for CredentialLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialLimit").field("state", &self.state).field("spacing_ms", &self.spacing_ms).field("late_ms", &self.late_ms).finish()
    }
}

impl CredentialLimit {
    /// The limit `rate` of the credential, its keys under `prefix` (on a slot of their
    /// own on a cluster). `margin_ms` is the per-account limit's: sends go at most half
    /// of it after their grant (the take's deadline), the other half is the way to the
    /// vendor. `lead_ms` is the longest a grant may precede its send (the take's lead).
    pub fn new(conn: RedisConn, prefix: &str, rate: RateLimit, margin_ms: u64, lead_ms: u64) -> Self {
        let tag = format!("{{{prefix}credential}}:");
        let late_ms = margin_ms / 2;
        Self {
            conn,
            state: format!("{tag}state"),
            reserved: format!("{tag}reserved"),
            spacing_ms: (rate.window_ms + margin_ms) as f64 / f64::from(rate.max.max(1)),
            late_ms,
            floor_ms: lead_ms + late_ms,
            script: Arc::new(Script::new(&format!("{}\n{}", crate::schedule::CLOCK, include_str!("lua/credential.lua")))),
        }
    }

    /// Asks for each message's send time. `clock` reads the caller's clock (ms): the
    /// credential's Redis keeps its own, so times travel as offsets from now, sent from
    /// the caller's now before the call. What comes back errs on the safe side by up to
    /// the call's time: when a message may go, read from the caller's now after the call
    /// (never earlier than granted); the latest it may go and a turn, from before (never
    /// later).
    pub async fn grant(&self, asks: &[Ask<'_>], clock: impl Fn() -> u64) -> redis::RedisResult<Vec<Grant>> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let before = clock() as i64;
        let mut inv = self.script.prepare_invoke();
        inv.key(&self.state).key(&self.reserved).arg(self.spacing_ms).arg(self.late_ms).arg(self.floor_ms);
        for a in asks {
            inv.arg(a.account).arg(a.from_ms as i64 - before).arg(a.deadline_ms as i64 - before);
        }
        let answers: Vec<(i64, u8, i64)> = inv.invoke_async(&mut self.conn.clone()).await?;
        let after = clock() as i64;
        let (late, early) = (|r: i64| (after + r).max(0) as u64, |r: i64| (before + r).max(0) as u64);
        Ok(answers
            .into_iter()
            .map(|(at, go, by)| if go == 1 { Grant::Go { at_ms: late(at), by_ms: early(by) } } else { Grant::Wait { until_ms: early(at) } })
            .collect())
    }
}
