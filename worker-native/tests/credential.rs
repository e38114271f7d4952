//! The gateway credential's limit (lua/credential.lua) against a real Redis (or the
//! test cluster, `TEST_REDIS_CLUSTER`): grants evenly spaced across workers, the
//! accounts served in the order they asked, a missed turn lost, a loss waited out.

#[allow(dead_code)] // shared with the schedule's tests, which use the rest
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::rate::RateLimit;
use support::RedisServer;
use worker_native::credential::{Ask, CredentialLimit, Grant};

/// 10 sends per second, a 100 ms margin: a grant every 110 ms, a send at most 50 ms
/// after its grant.
const RATE: RateLimit = RateLimit { max: 10, window_ms: 1000 };
const MARGIN_MS: u64 = 100;
const SPACING_MS: u64 = 110;
/// The longest a take may come before its turn. Long here (no test waits it out: each
/// asks for its turn ahead): the first turns are this far ahead, so that a test slowed
/// by a busy machine still asks for them before they pass (CI, 2026-12-07: a0's turn,
/// 360 ms ahead with 200 ms, had passed before it asked).
const LEAD_MS: u64 = 2_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Two workers' handles on one credential.
fn workers(redis: &RedisServer) -> (CredentialLimit, CredentialLimit) {
    let s = redis.schedule(RATE, 1, MARGIN_MS);
    let one = CredentialLimit::new(s.connection(), s.prefix(), RATE, MARGIN_MS, LEAD_MS);
    let other = CredentialLimit::new(redis.schedule(RATE, 1, MARGIN_MS).connection(), s.prefix(), RATE, MARGIN_MS, LEAD_MS);
    (one, other)
}

/// Times travel as offsets from each side's now: a grant comes back later than it was
/// made by up to the call's time (never earlier, but for the clocks' whole ms).
const CALL_MS: u64 = 20;

fn late_by(expected: u64, got: u64) -> bool {
    (expected - 2..=expected + CALL_MS).contains(&got)
}

fn ask(account: &str, from_ms: u64, window_ms: u64) -> Ask<'_> {
    Ask { account, from_ms, deadline_ms: from_ms + window_ms }
}

fn until(g: Grant) -> u64 {
    match g {
        Grant::Wait { until_ms } => until_ms,
        Grant::Go { at_ms, by_ms } => panic!("went at {at_ms} (by {by_ms}), expected to wait; now {}", now_ms()),
    }
}

/// Six accounts asking through two workers at once get turns one spacing apart, in the
/// order they asked, none of them now (the first grant after a new Redis waits out what
/// a lost one may have granted); each, asking again at its turn, goes then; an account
/// asking meanwhile queues behind all of them, however idle it was.
#[tokio::test]
async fn accounts_take_turns_one_spacing_apart_across_workers() {
    let redis = RedisServer::start();
    let (a, b) = workers(&redis);
    let now = now_ms();
    let first = a.grant(&[ask("a0", now, 10), ask("a1", now, 10), ask("a2", now, 10)], now_ms).await.unwrap();
    let second = b.grant(&[ask("a3", now, 10), ask("a4", now, 10), ask("a5", now, 10)], now_ms).await.unwrap();
    let turns: Vec<u64> = first.into_iter().chain(second).map(until).collect();
    assert!(turns[0] >= now + LEAD_MS + MARGIN_MS / 2 + SPACING_MS, "the first turn waits out a lost Redis's grants: {turns:?}");
    for w in turns.windows(2) {
        assert!(w[1] - w[0] >= SPACING_MS - CALL_MS && w[1] - w[0] <= SPACING_MS + CALL_MS, "one spacing apart, in order: {turns:?}");
    }
    let late = a.grant(&[ask("quiet", now_ms(), 10)], now_ms).await.unwrap();
    assert!(until(late[0]) + CALL_MS >= turns[5] + SPACING_MS, "behind every account waiting: {late:?} after {turns:?}");
    // Each account, back at its turn (another worker may take it), goes then.
    for (i, turn) in turns.iter().enumerate() {
        let account = format!("a{i}");
        let handle = if i % 2 == 0 { &b } else { &a };
        let got = handle.grant(&[ask(&account, *turn, 10)], now_ms).await.unwrap();
        let Grant::Go { at_ms, by_ms } = got[0] else { panic!("{account} waits again: {got:?}") };
        assert!(late_by(*turn, at_ms) && late_by(turn + MARGIN_MS / 2, by_ms), "{account} at its turn {turn}: {got:?}");
    }
}

/// A turn its account comes too late for (its message taken more than the allowed lag
/// after it) is lost, never sent late: the account asks again at the end of the line.
#[tokio::test]
async fn a_turn_missed_is_lost_not_sent_late() {
    let redis = RedisServer::start();
    let (a, _) = workers(&redis);
    // A first call (the connection, the script's load) may take long: a turn reads
    // early by its time, and the late ask below would then be on time.
    a.grant(&[ask("warm", now_ms(), 10)], now_ms).await.unwrap();
    let now = now_ms();
    let turn = until(a.grant(&[ask("x", now, 10)], now_ms).await.unwrap()[0]);
    let other = until(a.grant(&[ask("y", now, 10)], now_ms).await.unwrap()[0]);
    let again = a.grant(&[ask("x", turn + MARGIN_MS / 2 + CALL_MS, 10)], now_ms).await.unwrap();
    assert!(late_by(other + SPACING_MS, until(again[0])), "a new turn, behind y's: {again:?}, y's at {other}");
}

/// Redis losing the credential's state (a failover without persistence) does not let
/// a grant come closer than a spacing to one given before the loss and still to be
/// sent: the next waits out the longest a granted send may follow its grant.
#[tokio::test]
async fn after_a_loss_the_next_grant_waits_out_what_was_granted_before() {
    let redis = RedisServer::start();
    let (a, _) = workers(&redis);
    let now = now_ms();
    let turn = until(a.grant(&[ask("x", now, 10)], now_ms).await.unwrap()[0]);
    let went = a.grant(&[ask("x", turn, 10)], now_ms).await.unwrap();
    assert!(matches!(went[0], Grant::Go { .. }));
    redis.wipe();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let asked = now_ms();
    let next = until(a.grant(&[ask("y", asked, 10)], now_ms).await.unwrap()[0]);
    assert!(next >= asked + LEAD_MS + MARGIN_MS / 2 + SPACING_MS, "{} ms after the loss", next - asked);
}
