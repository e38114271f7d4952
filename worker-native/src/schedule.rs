//! The per-account schedule in Redis (DESIGN §6): per-account queues ordered by
//! priority then age, a set of accounts ordered by when each may next send, and the
//! per-account limit, all changed only by the atomic Lua steps in `lua/`.
//!
//! Every call is one round trip, however many messages it carries; [`Schedule`]
//! counts them so that benchmarks can report round trips per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::Script;
use serde::{Deserialize, Serialize};
use shared::campaign::Campaign;
use shared::message::{AccountControl, Hold, QueueMessage};
use shared::rate::RateLimit;

const COMMON: &str = include_str!("lua/common.lua");

/// How long a duplicate delivery of a message id is recognised (SQS keeps a message
/// at most 14 days).
const SEEN_TTL_SECONDS: u64 = 14 * 24 * 3600;

/// A message as it waits in Redis: the queue message and the attempts made so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "m")]
    pub message: QueueMessage,
    #[serde(rename = "a")]
    pub attempts: u32,
}

/// A leased message: the caller sends it from `slot_ms` until `deadline_ms` (Redis
/// time), and must [`Schedule::complete`] it before its lease ends.
#[derive(Debug, Clone)]
pub struct Taken {
    pub account: String,
    pub id: String,
    qscore: String,
    pub payload: Payload,
    pub slot_ms: u64,
    pub deadline_ms: u64,
    /// Redis time of its take.
    pub taken_ms: u64,
}

impl Taken {
    /// A message as `take` would lease it now (for tests of what happens after a take).
    pub fn leased(payload: Payload) -> Self {
        let m = &payload.message;
        Self { account: m.creator_id.clone(), id: m.id.clone(), qscore: queue_score(m).to_string(), payload, slot_ms: 0, deadline_ms: u64::MAX, taken_ms: 0 }
    }
}

/// The payload of a taken message: its own, or a campaign's message built from the
/// campaign's payload (`template`) and its compact one, `~cid\trecipient`.
fn taken_payload(id: &str, payload: &str, template: &str) -> Result<Payload, String> {
    let Some(compact) = payload.strip_prefix('~') else { return serde_json::from_str(payload).map_err(|e| e.to_string()) };
    let (campaign, recipient) = compact.split_once('\t').ok_or("a campaign payload without its recipient")?;
    let mut p: Payload = serde_json::from_str(template).map_err(|e| format!("campaign {campaign}: {e}"))?;
    p.message.id = id.to_owned();
    p.message.recipient_id = recipient.to_owned();
    p.message.campaign_id = Some(campaign.to_owned());
    Ok(p)
}

/// The result of one take: what was leased, Redis's clock, and when the next message
/// becomes due (`None` when nothing is waiting).
#[derive(Debug)]
pub struct TakeResult {
    pub now_ms: u64,
    pub next_due_ms: Option<u64>,
    pub taken: Vec<Taken>,
    /// The schedule's epoch is missing: Redis lost its data (or is new), and the
    /// schedule must be rebuilt from the ledger (`crate::recover`).
    pub lost: bool,
}

/// What became of a leased message.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Sent, or failed for good: forget it.
    Done(Taken),
    /// Try again after `delay_ms`; the payload carries the new attempt count.
    Retry { taken: Taken, delay_ms: u64 },
    /// Gateway said 429: retry after `delay_ms` and pause the whole account as long.
    Pause { taken: Taken, delay_ms: u64 },
    /// Not sent (shutdown): straight back to its queue.
    Release(Taken),
}

impl Completion {
    pub fn taken(&self) -> &Taken {
        match self {
            Completion::Done(t) | Completion::Release(t) | Completion::Retry { taken: t, .. } | Completion::Pause { taken: t, .. } => t,
        }
    }
}

/// What an enqueue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub added: u64,
    /// Messages whose account had to wait for its limit.
    pub deferred: u64,
    /// Positions (in the enqueued slice) of the duplicates.
    pub duplicate_at: Vec<usize>,
}

impl Enqueued {
    /// How many were duplicate deliveries, dropped.
    pub fn duplicates(&self) -> usize {
        self.duplicate_at.len()
    }

    /// How many of `messages` (the slice that was enqueued) each account got.
    pub fn added_by_account<'a>(&self, messages: &'a [QueueMessage]) -> HashMap<&'a str, i64> {
        let mut added = HashMap::new();
        for (i, m) in messages.iter().enumerate() {
            if !self.duplicate_at.contains(&i) {
                *added.entry(m.creator_id.as_str()).or_default() += 1;
            }
        }
        added
    }
}

/// The steps of a rebuild (see lua/recover.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    Begin,
    Lost,
    Renew,
    End,
}

/// Rate-limit settings every script needs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rate: RateLimit,
    pub burst: u32,
    /// Added to the window, so that jitter between recording a send and the gateway
    /// receiving it cannot squeeze one more send into a window.
    pub margin_ms: u64,
}

struct Scripts {
    enqueue: Script,
    campaign: Script,
    cancel_campaign: Script,
    recover: Script,
    take: Script,
    complete: Script,
    reclaim: Script,
    renew: Script,
    control: Script,
    backlog: Script,
}

/// Handle on the schedule; cheap to clone.
#[derive(Clone)]
pub struct Schedule {
    conn: ConnectionManager,
    prefix: String,
    limits: Limits,
    scripts: Arc<Scripts>,
    round_trips: Arc<AtomicU64>,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// The queue order: priority first (1 most urgent), then acceptance time.
pub fn queue_score(m: &QueueMessage) -> u64 {
    let accepted = shared::time::parse_rfc3339_ms(&m.accepted_at).unwrap_or(0);
    u64::from(m.priority) * 10_000_000_000_000 + accepted
}

impl Schedule {
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>, limits: Limits) -> Self {
        let scripts = Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            campaign: script(include_str!("lua/campaign.lua")),
            cancel_campaign: script(include_str!("lua/cancel_campaign.lua")),
            recover: script(include_str!("lua/recover.lua")),
            take: script(include_str!("lua/take.lua")),
            complete: script(include_str!("lua/complete.lua")),
            reclaim: script(include_str!("lua/reclaim.lua")),
            renew: script(include_str!("lua/renew.lua")),
            control: script(include_str!("lua/control.lua")),
            backlog: Script::new(
                // A waiting campaign is one queue (or delayed) member and a list.
                r"local n = redis.call('ZCARD', ARGV[1] .. 'delayed')
                  for _, a in ipairs(redis.call('ZRANGE', ARGV[1] .. 'ready', 0, -1)) do n = n + redis.call('ZCARD', ARGV[1] .. 'q:' .. a) end
                  for _, c in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'campaigns')) do n = n + redis.call('LLEN', ARGV[1] .. 'cr:' .. c) - 1 end
                  return n",
            ),
        };
        Self { conn, prefix: prefix.into(), limits, scripts: Arc::new(scripts), round_trips: Arc::new(AtomicU64::new(0)) }
    }

    /// The prefix of its keys: the schedule's name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Redis round trips made through this handle (and its clones) so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(self.limits.rate.max)
            .arg(self.limits.rate.window_ms)
            .arg(self.limits.burst.max(1))
            .arg(self.limits.margin_ms);
        inv
    }

    async fn run<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }

    /// Adds messages to their accounts' queues, dropping duplicate deliveries.
    pub async fn enqueue(&self, messages: &[QueueMessage]) -> redis::RedisResult<Enqueued> {
        let payloads: Vec<Payload> = messages.iter().map(|m| Payload { message: m.clone(), attempts: 0 }).collect();
        self.enqueue_payloads(&payloads).await
    }

    /// Adds messages with the attempts they have made (a rebuild from the ledger).
    pub async fn enqueue_payloads(&self, payloads: &[Payload]) -> redis::RedisResult<Enqueued> {
        if payloads.is_empty() {
            return Ok(Enqueued::default());
        }
        let mut inv = self.invocation(&self.scripts.enqueue);
        inv.arg(SEEN_TTL_SECONDS);
        for p in payloads {
            let m = &p.message;
            let payload = serde_json::to_string(p).expect("payload serializes");
            inv.arg(&m.creator_id).arg(&m.id).arg(m.generation).arg(queue_score(m)).arg(payload).arg(m.send_at_ms().unwrap_or(0));
        }
        let (added, deferred, duplicate_at): (u64, u64, Vec<usize>) = self.run(&inv).await?;
        Ok(Enqueued { added, deferred, duplicate_at })
    }

    /// Adds a campaign to its account's queue, its content stored once (see
    /// lua/campaign.lua); returns how many messages were added (0 for a duplicate).
    pub async fn enqueue_campaign(&self, c: &Campaign) -> redis::RedisResult<u64> {
        let template = c.template();
        let payload = serde_json::to_string(&Payload { message: template.clone(), attempts: 0 }).expect("payload serializes");
        let mut inv = self.invocation(&self.scripts.campaign);
        inv.arg(SEEN_TTL_SECONDS).arg(&c.creator_id).arg(&c.id).arg(queue_score(&template)).arg(template.send_at_ms().unwrap_or(0)).arg(payload);
        for (i, recipient) in c.recipients.iter().enumerate() {
            inv.arg(format!("{}\t{recipient}", shared::campaign::message_id(&c.id, i as u32)));
        }
        self.run(&inv).await
    }

    /// Takes a canceled campaign's waiting messages off the schedule; returns how many.
    pub async fn cancel_campaign(&self, c: &Campaign) -> redis::RedisResult<u64> {
        let mut inv = self.invocation(&self.scripts.cancel_campaign);
        inv.arg(&c.creator_id).arg(&c.id).arg(queue_score(&c.template()));
        self.run(&inv).await
    }

    /// One step of a rebuild of the schedule after a loss (see lua/recover.lua);
    /// whether it was this worker's to take.
    pub async fn recovery(&self, step: RecoveryStep, token: &str) -> redis::RedisResult<bool> {
        let mut inv = self.invocation(&self.scripts.recover);
        let step = match step {
            RecoveryStep::Begin => "begin",
            RecoveryStep::Lost => "lost",
            RecoveryStep::Renew => "renew",
            RecoveryStep::End => "end",
        };
        inv.arg(step).arg(token).arg(crate::dispatch::MAX_LEAD_MS);
        self.run::<u8>(&inv).await.map(|r| r == 1)
    }

    /// Holds or releases accounts (see lua/control.lua); returns how many controls
    /// were newer than the last applied to their account.
    pub async fn control(&self, controls: &[AccountControl]) -> redis::RedisResult<u64> {
        if controls.is_empty() {
            return Ok(0);
        }
        let mut inv = self.invocation(&self.scripts.control);
        for c in controls {
            inv.arg(&c.creator_id).arg(if c.control == Hold::Pause { "pause" } else { "resume" }).arg(c.at_ms);
        }
        self.run(&inv).await
    }

    /// Leases up to `n` messages whose slots fall by now + `horizon_ms`, none earlier
    /// than now + `lead_ms`, each for `lease_ms` after its slot (see lua/take.lua).
    pub async fn take(&self, n: usize, lease_ms: u64, lead_ms: u64, horizon_ms: u64) -> redis::RedisResult<TakeResult> {
        let mut inv = self.invocation(&self.scripts.take);
        inv.arg(n).arg(lease_ms).arg(lead_ms).arg(horizon_ms);
        let (now_ms, next_due, rest, lost): (u64, i64, Vec<String>, u8) = self.run(&inv).await?;
        let mut taken = Vec::with_capacity(rest.len() / 7);
        for chunk in rest.chunks_exact(7) {
            let payload = match taken_payload(&chunk[1], &chunk[3], &chunk[4]) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(account = %chunk[0], id = %chunk[1], error = %e, "unreadable payload in the schedule; dropped");
                    continue;
                }
            };
            let time = |s: &str| s.parse::<u64>().unwrap_or(now_ms);
            taken.push(Taken { account: chunk[0].clone(), id: chunk[1].clone(), qscore: chunk[2].clone(), payload, slot_ms: time(&chunk[5]), deadline_ms: time(&chunk[6]), taken_ms: now_ms });
        }
        Ok(TakeResult { now_ms, next_due_ms: (next_due >= 0).then_some(next_due as u64), taken, lost: lost == 1 })
    }

    /// Records outcomes of leased messages, in one round trip.
    pub async fn complete(&self, outcomes: &[Completion]) -> redis::RedisResult<u64> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let mut inv = self.invocation(&self.scripts.complete);
        for o in outcomes {
            let (kind, t, delay, payload) = match o {
                Completion::Done(t) => ("done", t, 0, String::new()),
                Completion::Release(t) => ("release", t, 0, serde_json::to_string(&t.payload).expect("payload serializes")),
                Completion::Retry { taken, delay_ms } => ("retry", taken, *delay_ms, serde_json::to_string(&taken.payload).expect("payload serializes")),
                Completion::Pause { taken, delay_ms } => ("pause", taken, *delay_ms, serde_json::to_string(&taken.payload).expect("payload serializes")),
            };
            let campaign = t.payload.message.campaign_id.as_deref().unwrap_or_default();
            inv.arg(kind).arg(&t.account).arg(&t.id).arg(&t.qscore).arg(t.payload.message.generation).arg(delay).arg(payload).arg(campaign).arg(t.taken_ms);
        }
        self.run(&inv).await
    }

    /// Requeues messages whose lease expired (their worker died).
    pub async fn reclaim(&self, max: usize) -> redis::RedisResult<u64> {
        let mut inv = self.invocation(&self.scripts.reclaim);
        inv.arg(max);
        self.run(&inv).await
    }

    /// Extends the leases of messages still held, by `lease_ms` from now.
    pub async fn renew(&self, held: &[Taken], lease_ms: u64) -> redis::RedisResult<u64> {
        let mut inv = self.invocation(&self.scripts.renew);
        inv.arg(lease_ms);
        for t in held {
            inv.arg(&t.account).arg(&t.id).arg(&t.qscore);
        }
        self.run(&inv).await
    }

    /// Sets one account's own limit (overrides the configured one).
    pub async fn set_account_limit(&self, account: &str, rate: RateLimit, burst: u32) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET").arg(format!("{}limits", self.prefix)).arg(account).arg(format!("{} {} {}", rate.max, rate.window_ms, burst.max(1))).query_async(&mut conn).await
    }

    /// Messages waiting (queued or delayed, not leased) over all accounts: the
    /// `ScheduledBacklog` metric. O(accounts), so called once per metrics interval.
    pub async fn backlog(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        self.scripts.backlog.arg(&self.prefix).invoke_async(&mut conn).await
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop)
    }

    /// Tells every worker that new work arrived.
    pub async fn wake(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH").arg(self.wake_channel()).arg(1).query_async::<i64>(&mut conn).await.map(drop)
    }

    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
}
