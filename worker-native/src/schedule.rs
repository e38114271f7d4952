//! The per-account schedule in Redis (docs/design.md §6): per-account queues ordered by
//! priority then age, a set of accounts ordered by when each may next send, and the
//! per-account limit, all changed only by the atomic Lua steps in `lua/`.
//!
//! Every call is one round trip per shard it touches, however many messages it
//! carries; [`Schedule`] counts them so that benchmarks can report round trips per
//! message.
//!
//! **Shards.** The schedule is split into a fixed number of virtual shards; an account
//! belongs to one by a stable hash of its id ([`shard_of`]), and every key of a shard
//! shares a hash tag (`{<prefix><shard>}:`), so that on a Redis Cluster each Lua step
//! runs on the one node that holds its shard: the limit stays exact and a step stays
//! one round trip. A single Redis is the same code with one shard (whose keys keep the
//! plain `<prefix>`). The count is recorded in Redis (`<prefix>shards`, checked at
//! start by [`Schedule::check_shards`]) and in each shard's epoch (checked by every
//! take), because workers that split accounts differently would each keep their own
//! limit for the same account. A take serves one shard, in turn among those due (see
//! [`Schedule::take`]), so none is starved however busy another is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use redis::Script;
use serde::{Deserialize, Serialize};
use shared::campaign::Campaign;
use shared::message::QueueMessage;
use shared::queue::{AccountControl, Hold};
use shared::rate::RateLimit;

use crate::connection::RedisConn;

/// Prepended to every script: Redis's clock and run id.
pub(crate) const CLOCK: &str = include_str!("lua/clock.lua");
const COMMON: &str = include_str!("lua/common.lua");

/// The longest lead a slot is given for its claim, however slow the ledger (what is
/// taken ahead is committed, so the lead stays short).
pub const MAX_LEAD_MS: u64 = 1_000;

/// The longest a take waits for its replicas (`REDIS_WAIT_REPLICAS`): well within the
/// claim lead, so that slots do not move.
pub const REPLICA_WAIT_MS: u64 = 50;

/// Takes in a row not acknowledged by the replicas in time after which a shard's
/// primary is taken to have none left, and its takes go on without.
pub const REPLICA_MISSES: u32 = 3;

/// The most shards a schedule may have (`SCHEDULE_SHARDS`).
pub const MAX_SHARDS: u16 = 1024;

/// How long a shard with nothing due is left without a take: the safety net should a
/// wake-up be lost (as the dispatcher's own longest sleep).
const IDLE_POLL_MS: u64 = 1000;

/// The shard of an account, among `shards`: FNV-1a of its id, then MurmurHash3's
/// finalizer, stable across processes, versions and platforms (never Rust's randomly
/// seeded hasher). Without the finalizer FNV-1a modulo a power of two reads only the
/// low bits of each byte: ids differing in one character's high bits would collide.
pub fn shard_of(account: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    /// The mapping is part of the data in Redis: it must never change (a worker of
    /// another version would keep another limit for the same account).
    #[test]
    fn the_shard_of_an_account_is_stable_and_even() {
        assert_eq!(["a", "q", "creator-1", "creator-2"].map(|a| shard_of(a, 16)), [11, 12, 11, 3]);
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[shard_of(&format!("acct-{i:05}"), 16)] += 1;
        }
        assert!(counts.iter().all(|&c| (850..=1150).contains(&c)), "{counts:?}");
        assert_ne!(shard_of("a", 16), shard_of("q", 16), "ids one high bit apart");
    }
}

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
    /// An attempt got no answer: it may have been sent. It is claimed (and sent again)
    /// even if its campaign was canceled meanwhile: it cannot be canceled any more.
    #[serde(rename = "s", default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_sent: bool,
}

/// The fields of each message in a take's answer (lua/take.lua).
pub const TAKEN_FIELDS: usize = 8;

/// A leased message: the caller sends it from `from_ms` until `deadline_ms` (Redis
/// time; the limit counted it at `slot_ms`), and must [`Schedule::complete`] it before its lease ends.
#[derive(Debug, Clone)]
pub struct Taken {
    pub account: String,
    /// The shard it was taken from (that of its account).
    pub shard: usize,
    pub id: String,
    qscore: String,
    pub payload: Payload,
    pub slot_ms: u64,
    pub deadline_ms: u64,
    /// The earliest it may go: its slot, or before it when its account may send
    /// earlier (an idle account's message, whose slot only left time for its claim).
    pub from_ms: u64,
    /// Redis time of its take.
    pub taken_ms: u64,
    /// A campaign's message taken from its list: counted in its campaign's `left` until
    /// done, so its payload goes back marked as such when an attempt of it comes back.
    from_list: bool,
}

impl Taken {
    /// A message as `take` would lease it now (for tests of what happens after a take).
    pub fn leased(payload: Payload) -> Self {
        let m = &payload.message;
        Self {
            account: m.creator_id.clone(),
            shard: 0,
            id: m.id.clone(),
            qscore: queue_score(m).to_string(),
            payload,
            slot_ms: 0,
            deadline_ms: u64::MAX,
            from_ms: 0,
            taken_ms: 0,
            from_list: false,
        }
    }
}

/// The payload of a taken message: its own, or a campaign's message built from the
/// campaign's payload (`template`) and its compact one, `~cid\trecipient`, or such a
/// message back from an attempt, `^payload` (see lua/common.lua); and whether it is
/// one of its campaign's list.
fn taken_payload(id: &str, payload: &str, template: &str) -> Result<(Payload, bool), String> {
    if let Some(back) = payload.strip_prefix('^') {
        return serde_json::from_str(back).map(|p| (p, true)).map_err(|e| e.to_string());
    }
    let Some(compact) = payload.strip_prefix('~') else { return serde_json::from_str(payload).map(|p| (p, false)).map_err(|e| e.to_string()) };
    let (campaign, recipient) = compact.split_once('\t').ok_or("a campaign payload without its recipient")?;
    let mut p: Payload = serde_json::from_str(template).map_err(|e| format!("campaign {campaign}: {e}"))?;
    p.message.id = id.to_owned();
    p.message.recipient_id = recipient.to_owned();
    p.message.campaign_id = Some(campaign.to_owned());
    Ok((p, true))
}

/// The result of one take: what was leased, Redis's clock, and when the next message
/// becomes due (`None` when nothing is waiting).
#[derive(Debug)]
pub struct TakeResult {
    /// Redis's clock when the take ran, and this process's when its answer came:
    /// slots are timed from this pair. Taken before the replicas' acknowledgement,
    /// whose wait (up to [`REPLICA_WAIT_MS`] when they are slow) would otherwise make
    /// the sends of one take later than another's: unevenly spaced.
    pub now_ms: u64,
    pub answered_at: std::time::Instant,
    pub next_due_ms: Option<u64>,
    pub taken: Vec<Taken>,
    /// The shard's epoch is missing: Redis lost its data (or is new), and the
    /// schedule must be rebuilt from the ledger (`crate::recover`).
    pub lost: bool,
    /// The shard's epoch was set by workers with another `SCHEDULE_SHARDS` (this
    /// many): nothing is taken.
    pub other_shards: Option<u16>,
}

/// What became of a leased message.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Sent, or failed for good: forget it.
    Done(Taken),
    /// Refused by its ledger claim (canceled, or finished already): forget it, and give
    /// its slot back to its account (it was never sent).
    Refused(Taken),
    /// Try again after `delay_ms`; the payload carries the new attempt count.
    Retry { taken: Taken, delay_ms: u64 },
    /// Another worker's claim holds it (its delivery may be under way): look again after
    /// `delay_ms`, and give its slot back.
    Defer { taken: Taken, delay_ms: u64 },
    /// Gateway said 429: retry after `delay_ms` and pause the whole account as long.
    Pause { taken: Taken, delay_ms: u64 },
    /// Not sent (a 429 met meanwhile, a stall, shutdown): straight back to its queue.
    Release(Taken),
    /// Not sent: its turn at the gateway credential's limit is at `until_ms` (Redis time of
    /// its shard; kept for its account, see lua/credential.lua). Back to its queue, its
    /// slot back, and its account sends nothing until then.
    Wait { taken: Taken, until_ms: u64 },
}

impl Completion {
    pub fn taken(&self) -> &Taken {
        match self {
            Completion::Done(t)
            | Completion::Refused(t)
            | Completion::Release(t)
            | Completion::Retry { taken: t, .. }
            | Completion::Defer { taken: t, .. }
            | Completion::Pause { taken: t, .. }
            | Completion::Wait { taken: t, .. } => t,
        }
    }

    /// Whether it gives its slot back (complete.lua's `refund`).
    pub(crate) fn refunds(&self) -> bool {
        matches!(self, Completion::Refused(_) | Completion::Defer { .. } | Completion::Release(_) | Completion::Wait { .. })
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

/// Each shard's last loss as read before account controls were checked against the
/// ledger ([`Schedule::loss_marks`]).
#[derive(Clone, Debug, Default)]
pub struct LossMarks(HashMap<usize, String>);

impl LossMarks {
    /// The same marks for a rebuild's own holds, which go in before the shard is complete
    /// again (others' controls wait for that: lua/control.lua).
    pub fn for_rebuild(self) -> Self {
        Self(self.0.into_iter().map(|(k, at)| (k, format!("r{at}"))).collect())
    }
}

/// What [`Schedule::control`] did: how many controls applied (newer than the last of
/// their account), and whether a shard refused them all (`stale`: it lost its data since
/// the marks, or waits for its rebuild).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controlled {
    pub applied: u64,
    pub stale: bool,
}

/// The steps of a rebuild (see lua/recover.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    Begin,
    /// The loss recorded, and what the shard still holds cleared: the ledger has it all.
    Lost,
    /// The loss recorded, what the shard holds kept: without the ledger it is the only copy.
    LostKeepingWhatIsLeft,
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
    drop: Script,
    recover: Script,
    take: Script,
    complete: Script,
    reclaim: Script,
    renew: Script,
    control: Script,
    backlog: Script,
}

/// One virtual shard: its key prefix and what this process knows of when it is due.
struct Shard {
    prefix: String,
    /// Names the shard to the cluster client: a step is routed by its first key.
    route_key: String,
    /// When (ms of this process's clock) the shard next has something due, as its last
    /// take said; 0 after a wake-up or a local change.
    due_ms: AtomicU64,
    /// Takes in a row whose replicas did not acknowledge in time (`REDIS_WAIT_REPLICAS`).
    wait_misses: std::sync::atomic::AtomicU32,
}

/// Handle on the schedule; cheap to clone.
#[derive(Clone)]
pub struct Schedule {
    conn: RedisConn,
    prefix: String,
    shards: Arc<Vec<Shard>>,
    limits: Limits,
    scripts: Arc<Scripts>,
    round_trips: Arc<AtomicU64>,
    /// The shard the next take starts looking from (round robin).
    turn: Arc<AtomicUsize>,
    /// Shards given new work since the last [`Schedule::wake`].
    to_wake: Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>,
    origin: Instant,
    /// Names this process's last take in each shard (take.lua).
    worker: String,
    /// Replicas that should have a take before its messages are handed out (0: none).
    wait_replicas: u32,
    /// Whether the last take waited for in vain (logged when it changes).
    unreplicated: Arc<std::sync::atomic::AtomicBool>,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{CLOCK}\n{COMMON}\n{body}"))
}

/// The queue order: priority first (1 most urgent), then acceptance time.
pub fn queue_score(m: &QueueMessage) -> u64 {
    let accepted = shared::time::parse_rfc3339_ms(&m.accepted_at).unwrap_or(0);
    u64::from(m.priority) * 10_000_000_000_000 + accepted
}

/// The key prefix of shard `k`: the plain prefix for a single untagged shard, else one
/// hash tag per shard so that all its keys live in one cluster slot.
pub fn shard_prefix(prefix: &str, k: usize, tagged: bool) -> String {
    if tagged {
        format!("{{{prefix}{k}}}:")
    } else {
        prefix.to_owned()
    }
}

impl Schedule {
    /// A schedule of one shard under `prefix` (a single Redis).
    pub fn new(conn: RedisConn, prefix: impl Into<String>, limits: Limits) -> Self {
        Self::sharded(conn, prefix, limits, 1, false)
    }

    /// A schedule of `shards` shards; `tagged` keys (always, with more than one shard)
    /// carry a hash tag per shard, as a cluster needs.
    pub fn sharded(conn: RedisConn, prefix: impl Into<String>, limits: Limits, shards: u16, tagged: bool) -> Self {
        let prefix = prefix.into();
        let count = usize::from(shards.clamp(1, MAX_SHARDS));
        let tagged = tagged || count > 1;
        let shards = (0..count)
            .map(|k| {
                let p = shard_prefix(&prefix, k, tagged);
                Shard { route_key: format!("{p}epoch"), prefix: p, due_ms: AtomicU64::new(0), wait_misses: Default::default() }
            })
            .collect();
        let scripts = Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            campaign: script(include_str!("lua/campaign.lua")),
            cancel_campaign: script(include_str!("lua/cancel_campaign.lua")),
            drop: script(include_str!("lua/drop.lua")),
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
        Self {
            conn,
            prefix,
            shards: Arc::new(shards),
            limits,
            scripts: Arc::new(scripts),
            round_trips: Arc::new(AtomicU64::new(0)),
            turn: Arc::new(AtomicUsize::new(0)),
            to_wake: Default::default(),
            origin: Instant::now(),
            worker: format!("{:016x}", rand::random::<u64>()),
            wait_replicas: 0,
            unreplicated: Default::default(),
        }
    }

    /// Every take that leases messages waits until `replicas` replicas have it (`WAIT`,
    /// one more round trip per such take): a failover then cannot forget a send the
    /// worker is about to make (its limit state) unless the replicas fail too. The wait
    /// is bounded ([`REPLICA_WAIT_MS`], within the claim lead); a take not acknowledged
    /// in time gives its messages back (their slots are lost, not the limit), unless
    /// [`REPLICA_MISSES`] takes in a row were not: then the shard's primary has no live
    /// replica (its replica was just promoted), and it goes on without, logged, rather
    /// than stop sending.
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

    /// The limit's margin (see lua/common.lua).
    pub fn margin_ms(&self) -> u64 {
        self.limits.margin_ms
    }

    /// How many shards the schedule has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of `account` in this schedule.
    pub fn shard_of(&self, account: &str) -> usize {
        shard_of(account, self.shards.len())
    }

    /// The key prefix of shard `k`.
    pub fn shard_key_prefix(&self, k: usize) -> &str {
        &self.shards[k].prefix
    }

    fn local_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Shard `k` may have something due now (new work, a resumed account, a retry).
    fn mark_due(&self, k: usize) {
        self.shards[k].due_ms.store(0, Ordering::Relaxed);
        self.to_wake.lock().expect("wake set").insert(k);
    }

    /// Another worker gave these shards new work (its wake-up, see [`Self::wake`]);
    /// an unreadable notice marks them all.
    pub fn shards_woken(&self, notice: &str) {
        let shards: Option<Vec<usize>> = notice.split(',').map(|k| k.parse().ok().filter(|k| *k < self.shards.len())).collect();
        match shards {
            Some(shards) => shards.into_iter().for_each(|k| self.shards[k].due_ms.store(0, Ordering::Relaxed)),
            None => self.shards.iter().for_each(|s| s.due_ms.store(0, Ordering::Relaxed)),
        }
    }

    /// Records (and checks) the shard count in Redis: a worker whose
    /// `SCHEDULE_SHARDS` differs from the one the schedule was made with must not run,
    /// or two workers would keep two limits for one account.
    /// Returns what is wrong, naming the setting, on a mismatch.
    pub async fn check_shards(&self) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        let count = self.shards.len();
        let recorded: Option<String> = redis::cmd("SET").arg(format!("{}shards", self.prefix)).arg(count).arg("NX").arg("GET").query_async(&mut conn).await?;
        Ok(match recorded.map(|r| r.parse::<usize>()) {
            None => None,
            Some(Ok(r)) if r == count => None,
            Some(r) => Some(format!(
                "SCHEDULE_SHARDS={count}, but the schedule in Redis under REDIS_KEY_PREFIX={} has {} shards: set SCHEDULE_SHARDS to that on every worker (to change it, stop every worker and delete the key {}shards: the schedule is then rebuilt from the ledger)",
                self.prefix,
                r.map_or_else(|_| "an unreadable count of".to_owned(), |r| r.to_string()),
                self.prefix
            )),
        })
    }

    /// The prefix of its keys: the schedule's name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Redis round trips made through this handle (and its clones) so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// A step on shard `k`: routed by the shard's key, with the arguments every script
    /// reads (common.lua).
    fn invocation<'a>(&self, script: &'a Script, k: usize) -> redis::ScriptInvocation<'a> {
        let shard = &self.shards[k];
        let mut inv = script.prepare_invoke();
        inv.key(&shard.route_key)
            .arg(&shard.prefix)
            .arg(self.limits.rate.max)
            .arg(self.limits.rate.window_ms)
            .arg(self.limits.burst.max(1))
            .arg(self.limits.margin_ms)
            .arg(self.shards.len());
        inv
    }

    /// Positions of `accounts` grouped by shard, in shard order.
    fn by_shard<'a>(&self, accounts: impl Iterator<Item = &'a str>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, a) in accounts.enumerate() {
            groups.entry(self.shard_of(a)).or_default().push(i);
        }
        groups.into_iter().collect()
    }

    async fn run<T: redis::FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }

    /// Adds messages to their accounts' queues, dropping duplicate deliveries.
    pub async fn enqueue(&self, messages: &[QueueMessage]) -> redis::RedisResult<Enqueued> {
        let payloads: Vec<Payload> = messages.iter().map(|m| Payload { message: m.clone(), attempts: 0, maybe_sent: false }).collect();
        self.enqueue_payloads(&payloads).await
    }

    /// Adds messages with the attempts they have made (a rebuild from the ledger).
    pub async fn enqueue_payloads(&self, payloads: &[Payload]) -> redis::RedisResult<Enqueued> {
        let groups = self.by_shard(payloads.iter().map(|p| p.message.creator_id.as_str()));
        let runs = groups.iter().map(|(k, at)| async move {
            let mut inv = self.invocation(&self.scripts.enqueue, *k);
            inv.arg(SEEN_TTL_SECONDS);
            for &i in at {
                let m = &payloads[i].message;
                let payload = serde_json::to_string(&payloads[i]).expect("payload serializes");
                // A campaign's first generation is left out while its campaign is on the
                // schedule as one member (enqueue.lua); a retry of it is a message of its own.
                let campaign = m.campaign_id.as_deref().filter(|_| m.generation == 0).unwrap_or("");
                inv.arg(&m.creator_id).arg(&m.id).arg(m.generation).arg(queue_score(m)).arg(payload).arg(m.send_at_ms().unwrap_or(0)).arg(campaign);
            }
            let r: (u64, u64, Vec<usize>) = self.run(&inv).await?;
            self.mark_due(*k);
            Ok::<_, redis::RedisError>(r)
        });
        let mut out = Enqueued::default();
        for ((_, at), r) in groups.iter().zip(join_all(runs).await) {
            let (added, deferred, duplicates) = r?;
            out.added += added;
            out.deferred += deferred;
            out.duplicate_at.extend(duplicates.into_iter().map(|d| at[d]));
        }
        out.duplicate_at.sort_unstable();
        Ok(out)
    }

    /// Adds a campaign to its account's queue, its content stored once (see
    /// lua/campaign.lua); returns how many messages were added (0 for a duplicate).
    pub async fn enqueue_campaign(&self, c: &Campaign) -> redis::RedisResult<u64> {
        let template = c.template();
        let payload = serde_json::to_string(&Payload { message: template.clone(), attempts: 0, maybe_sent: false }).expect("payload serializes");
        let k = self.shard_of(&c.creator_id);
        let mut inv = self.invocation(&self.scripts.campaign, k);
        inv.arg(SEEN_TTL_SECONDS).arg(&c.creator_id).arg(&c.id).arg(queue_score(&template)).arg(template.send_at_ms().unwrap_or(0)).arg(payload);
        for (i, recipient) in c.recipients.iter().enumerate() {
            inv.arg(format!("{}\t{recipient}", shared::campaign::message_id(&c.id, i as u32)));
        }
        let added = self.run(&inv).await?;
        self.mark_due(k);
        Ok(added)
    }

    /// Takes a canceled campaign's waiting messages off the schedule; returns how many.
    pub async fn cancel_campaign(&self, c: &Campaign) -> redis::RedisResult<u64> {
        let mut inv = self.invocation(&self.scripts.cancel_campaign, self.shard_of(&c.creator_id));
        inv.arg(&c.creator_id).arg(&c.id).arg(queue_score(&c.template())).arg(SEEN_TTL_SECONDS);
        self.run(&inv).await
    }

    /// Takes canceled messages off the schedule (see lua/drop.lua); returns how many
    /// were there and not leased.
    pub async fn drop_canceled(&self, messages: &[QueueMessage]) -> redis::RedisResult<u64> {
        let groups = self.by_shard(messages.iter().map(|m| m.creator_id.as_str()));
        let runs = groups.iter().map(|(k, at)| async move {
            let mut inv = self.invocation(&self.scripts.drop, *k);
            for m in at.iter().map(|&i| &messages[i]) {
                inv.arg(&m.creator_id).arg(&m.id).arg(queue_score(m)).arg(m.generation).arg(m.campaign_id.as_deref().unwrap_or_default()).arg(&m.recipient_id);
            }
            self.run::<u64>(&inv).await
        });
        join_all(runs).await.into_iter().sum()
    }

    /// Pauses accounts until the given times at least (a 429's pause put back by a
    /// rebuild; see lua/control.lua).
    pub async fn pause_until(&self, pauses: &[(String, u64)]) -> redis::RedisResult<u64> {
        let groups = self.by_shard(pauses.iter().map(|(a, _)| a.as_str()));
        let runs = groups.iter().map(|(k, at)| async move {
            let mut inv = self.invocation(&self.scripts.control, *k);
            inv.arg("*"); // a pause only delays: whatever its order, nothing to check
            for (account, until) in at.iter().map(|&i| &pauses[i]) {
                inv.arg(account).arg("until").arg(until);
            }
            self.run::<u64>(&inv).await
        });
        join_all(runs).await.into_iter().sum()
    }

    /// One step of a rebuild of shard `k` after a loss (see lua/recover.lua);
    /// whether it was this worker's to take.
    pub async fn recovery(&self, step: RecoveryStep, token: &str, k: usize) -> redis::RedisResult<bool> {
        let mut inv = self.invocation(&self.scripts.recover, k);
        let step = match step {
            RecoveryStep::Begin => "begin",
            RecoveryStep::Lost => "lost",
            RecoveryStep::LostKeepingWhatIsLeft => "lost_keep",
            RecoveryStep::Renew => "renew",
            RecoveryStep::End => "end",
        };
        inv.arg(step).arg(token).arg(MAX_LEAD_MS);
        self.run::<u8>(&inv).await.map(|r| r == 1)
    }

    /// Each of these shards' last loss (recover.lua's `lost_at`), read before account
    /// controls are checked against the ledger and given to [`Self::control`] with them.
    pub async fn loss_marks(&self, shards: impl IntoIterator<Item = usize>) -> redis::RedisResult<LossMarks> {
        let mut shards: Vec<usize> = shards.into_iter().collect();
        shards.sort_unstable();
        shards.dedup();
        let reads = shards.iter().map(|&k| async move {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let mut conn = self.conn.clone();
            let at: Option<String> = redis::cmd("GET").arg(format!("{}lost_at", self.shards[k].prefix)).query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>((k, at.unwrap_or_default()))
        });
        Ok(LossMarks(join_all(reads).await.into_iter().collect::<redis::RedisResult<_>>()?))
    }

    /// Holds or releases accounts (see lua/control.lua), as checked against the ledger
    /// after `checked` was read ([`Self::loss_marks`], which must cover their shards).
    /// A shard that lost its data since, or waits for its rebuild, applies none of its
    /// controls (`stale`): check them against the ledger again ([`Self::control_checked`]).
    pub async fn control(&self, controls: &[AccountControl], checked: &LossMarks) -> redis::RedisResult<Controlled> {
        let groups = self.by_shard(controls.iter().map(|c| c.creator_id.as_str()));
        let runs = groups.iter().map(|(k, at)| async move {
            let mut inv = self.invocation(&self.scripts.control, *k);
            inv.arg(checked.0.get(k).map_or("*unread", String::as_str));
            for c in at.iter().map(|&i| &controls[i]) {
                inv.arg(&c.creator_id).arg(if c.control == Hold::Pause { "pause" } else { "resume" }).arg(c.at_ms);
            }
            let applied: i64 = self.run(&inv).await?;
            self.mark_due(*k); // a resumed account may be due now
            Ok::<_, redis::RedisError>(applied)
        });
        let mut out = Controlled::default();
        for r in join_all(runs).await {
            match u64::try_from(r?) {
                Ok(n) => out.applied += n,
                Err(_) => out.stale = true,
            }
        }
        Ok(out)
    }

    /// Applies account controls in the order the ledger gives them: `check` writes them
    /// to the ledger and returns those it took (a newer control refuses an older one);
    /// then they are applied here. Should a shard lose its data in between, or wait for
    /// its rebuild, the check is made again a little later: a control the ledger took
    /// before a newer one must not land after it (see lua/control.lua). Returns how many
    /// were applied.
    pub async fn control_checked<F, Fut>(&self, accounts: &[&str], check: F) -> anyhow::Result<u64>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Vec<AccountControl>>>,
    {
        const CHECKS: u32 = 10;
        let mut applied = 0;
        for tries in 1..=CHECKS {
            let marks = self.loss_marks(accounts.iter().map(|a| self.shard_of(a))).await?;
            let current = check().await?;
            let done = self.control(&current, &marks).await?;
            applied += done.applied;
            if !done.stale {
                return Ok(applied);
            }
            tracing::info!(tries, "the schedule lost its data or is being rebuilt: account controls checked against the ledger again");
            tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(tries))).await;
        }
        anyhow::bail!("account controls not applied: the schedule was still being rebuilt after {CHECKS} checks")
    }

    /// Leases up to `n` messages whose slots fall by now + `horizon_ms`, none earlier
    /// than now + `lead_ms`, each for `lease_ms` after its slot (see lua/take.lua),
    /// from one shard: the next in turn among those due by the horizon (as far as this
    /// process knows: what its takes said, and wake-ups). Round robin, so that no shard
    /// waits behind a busy one; a caller that got fewer than `n` and sees `next_due_ms`
    /// already reached takes again at once, from the next shard due.
    ///
    /// Each take carries a token; Redis keeps this process's last answer with it for a
    /// few seconds: a take the cluster client sends again after a connection error gets
    /// the same messages back instead of taking more (which would strand the first ones
    /// until their lease ran out). Takes of one handle (and its clones) must not overlap.
    pub async fn take(&self, n: usize, lease_ms: u64, lead_ms: u64, horizon_ms: u64) -> redis::RedisResult<TakeResult> {
        let k = self.next_shard(horizon_ms);
        let token = format!("{:016x}", rand::random::<u64>());
        let mut inv = self.invocation(&self.scripts.take, k);
        inv.arg(n).arg(lease_ms).arg(lead_ms).arg(horizon_ms).arg(&self.worker).arg(&token);
        let local_at = self.local_ms();
        let (now_ms, next_due, rest, epoch): (u64, i64, Vec<String>, i64) = self.run(&inv).await?;
        let answered_at = std::time::Instant::now();
        let mut taken = Vec::with_capacity(rest.len() / TAKEN_FIELDS);
        for chunk in rest.chunks_exact(TAKEN_FIELDS) {
            let (payload, from_list) = match taken_payload(&chunk[1], &chunk[3], &chunk[4]) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(account = %chunk[0], id = %chunk[1], error = %e, "unreadable payload in the schedule; dropped");
                    continue;
                }
            };
            let time = |s: &str| s.parse::<u64>().unwrap_or(now_ms);
            taken.push(Taken {
                account: chunk[0].clone(),
                shard: k,
                id: chunk[1].clone(),
                qscore: chunk[2].clone(),
                payload,
                slot_ms: time(&chunk[5]),
                deadline_ms: time(&chunk[6]),
                from_ms: time(&chunk[7]),
                taken_ms: now_ms,
                from_list,
            });
        }
        // When this shard is next due, on this process's clock; then the earliest of all.
        let due_in = |due: i64| if due < 0 { IDLE_POLL_MS } else { (due as u64).saturating_sub(now_ms) };
        self.shards[k].due_ms.store(local_at + due_in(next_due), Ordering::Relaxed);
        let next_due_ms = if self.shards.len() == 1 {
            (next_due >= 0).then_some(next_due as u64)
        } else {
            let earliest = self.shards.iter().map(|s| s.due_ms.load(Ordering::Relaxed)).min().unwrap_or(local_at);
            Some(now_ms + earliest.saturating_sub(self.local_ms()))
        };
        if self.wait_replicas > 0 && !taken.is_empty() {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let acked = self.conn.wait_for_replicas(&self.shards[k].route_key, self.wait_replicas, REPLICA_WAIT_MS).await?;
            let misses = if acked < self.wait_replicas { self.shards[k].wait_misses.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
            if misses == 0 {
                self.shards[k].wait_misses.store(0, Ordering::Relaxed);
            } else if misses < REPLICA_MISSES {
                let back: Vec<Completion> = std::mem::take(&mut taken).into_iter().map(Completion::Release).collect();
                self.complete(&back).await?;
            }
            let missing = misses >= REPLICA_MISSES;
            if missing != self.unreplicated.swap(missing, Ordering::Relaxed) {
                if missing {
                    tracing::warn!(
                        acked,
                        wanted = self.wait_replicas,
                        shard = k,
                        "takes not replicated in time: going on without (a failover now may forget the last sends)"
                    );
                } else {
                    tracing::info!("takes replicated again");
                }
            }
        }
        let other_shards = (epoch > 1).then(|| (epoch - 2) as u16);
        Ok(TakeResult { now_ms, answered_at, next_due_ms, taken, lost: epoch == 1, other_shards })
    }

    /// The shard the next take serves: the first due by `horizon_ms` from this turn on,
    /// else the one due soonest.
    fn next_shard(&self, horizon_ms: u64) -> usize {
        let count = self.shards.len();
        if count == 1 {
            return 0;
        }
        let by = self.local_ms() + horizon_ms;
        let start = self.turn.load(Ordering::Relaxed) % count;
        let due = |k: &usize| self.shards[*k].due_ms.load(Ordering::Relaxed);
        let k = (start..start + count).map(|i| i % count).find(|k| due(k) <= by).unwrap_or_else(|| (0..count).min_by_key(due).unwrap_or(0));
        self.turn.store(k + 1, Ordering::Relaxed);
        k
    }

    /// Records outcomes of leased messages, in one round trip per shard.
    pub async fn complete(&self, outcomes: &[Completion]) -> redis::RedisResult<u64> {
        let groups = self.by_shard(outcomes.iter().map(|o| o.taken().account.as_str()));
        let runs = groups.iter().map(|(k, at)| {
            // Slots given back go latest first, so that each finds the account's next
            // slot right after it (complete.lua's `refund`).
            let mut these: Vec<&Completion> = at.iter().map(|&i| &outcomes[i]).collect();
            these.sort_by_key(|o| if o.refunds() { std::cmp::Reverse(o.taken().slot_ms) } else { std::cmp::Reverse(u64::MAX) });
            self.complete_shard(*k, these.into_iter())
        });
        join_all(runs).await.into_iter().sum()
    }

    async fn complete_shard(&self, k: usize, outcomes: impl Iterator<Item = &Completion>) -> redis::RedisResult<u64> {
        let mut inv = self.invocation(&self.scripts.complete, k);
        let mut back = false;
        for o in outcomes {
            back |= !matches!(o, Completion::Done(_));
            let payload = |t: &Taken| {
                let json = serde_json::to_string(&t.payload).expect("payload serializes");
                if t.from_list {
                    format!("^{json}")
                } else {
                    json
                }
            };
            let (kind, t, delay, payload) = match o {
                Completion::Done(t) => ("done", t, 0, String::new()),
                Completion::Refused(t) => ("refused", t, 0, String::new()),
                Completion::Release(t) => ("release", t, 0, payload(t)),
                Completion::Retry { taken, delay_ms } => ("retry", taken, *delay_ms, payload(taken)),
                Completion::Defer { taken, delay_ms } => ("defer", taken, *delay_ms, payload(taken)),
                Completion::Pause { taken, delay_ms } => ("pause", taken, *delay_ms, payload(taken)),
                Completion::Wait { taken, until_ms } => ("wait", taken, *until_ms, payload(taken)),
            };
            let campaign = t.payload.message.campaign_id.as_deref().unwrap_or_default();
            inv.arg(kind)
                .arg(&t.account)
                .arg(&t.id)
                .arg(&t.qscore)
                .arg(t.payload.message.generation)
                .arg(delay)
                .arg(payload)
                .arg(campaign)
                .arg(t.taken_ms)
                .arg(t.slot_ms);
        }
        let released = self.run(&inv).await?;
        if back {
            self.mark_due(k); // a message back in its queue, or a retry: look again
        }
        Ok(released)
    }

    /// Requeues messages whose lease expired (their worker died).
    pub async fn reclaim(&self, max: usize) -> redis::RedisResult<u64> {
        let mut total = 0;
        for k in 0..self.shards.len() {
            let mut inv = self.invocation(&self.scripts.reclaim, k);
            inv.arg(max);
            let n: u64 = self.run(&inv).await?;
            if n > 0 {
                self.mark_due(k);
            }
            total += n;
        }
        Ok(total)
    }

    /// Extends the leases of messages still held, by `lease_ms` from now.
    pub async fn renew(&self, held: &[Taken], lease_ms: u64) -> redis::RedisResult<u64> {
        let groups = self.by_shard(held.iter().map(|t| t.account.as_str()));
        let runs = groups.iter().map(|(k, at)| async move {
            let mut inv = self.invocation(&self.scripts.renew, *k);
            inv.arg(lease_ms);
            for t in at.iter().map(|&i| &held[i]) {
                inv.arg(&t.account).arg(&t.id).arg(&t.qscore);
            }
            self.run::<u64>(&inv).await
        });
        join_all(runs).await.into_iter().sum()
    }

    /// Sets one account's own limit (overrides the configured one).
    pub async fn set_account_limit(&self, account: &str, rate: RateLimit, burst: u32) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let k = self.shard_of(account);
        redis::cmd("HSET")
            .arg(format!("{}limits", self.shards[k].prefix))
            .arg(account)
            .arg(format!("{} {} {}", rate.max, rate.window_ms, burst.max(1)))
            .query_async(&mut conn)
            .await
    }

    /// Messages waiting (queued or delayed, not leased) over all accounts: the
    /// `ScheduledBacklog` metric. O(accounts), so called once per metrics interval.
    pub async fn backlog(&self) -> redis::RedisResult<u64> {
        let runs = self.shards.iter().map(|shard| {
            let mut conn = self.conn.clone();
            async move { self.scripts.backlog.key(&shard.route_key).arg(&shard.prefix).invoke_async::<u64>(&mut conn).await }
        });
        join_all(runs).await.into_iter().sum()
    }

    /// Its connection to Redis (for what lives beside the schedule: the credential's limit).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop)
    }

    /// Tells every worker which shards got new work through this handle since the last
    /// call (see [`Self::woken`]); nothing when none did.
    pub async fn wake(&self) -> redis::RedisResult<()> {
        let shards = std::mem::take(&mut *self.to_wake.lock().expect("wake set"));
        if shards.is_empty() {
            return Ok(());
        }
        let notice = shards.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",");
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH").arg(self.wake_channel()).arg(notice).query_async::<i64>(&mut conn).await.map(drop)
    }

    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
}
