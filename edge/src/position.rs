//! Queue positions without a counter write per send. The account's backlog counter is
//! kept by the worker (added to when it schedules a message, taken from at each
//! outcome); the edge reads it, and each isolate remembers what it read for
//! [`FRESH_MS`] and counts the places it handed out since (at once, so that concurrent
//! sends get distinct places, even before the first read is back). A burst of sends reads
//! the summary about once a second instead of writing it on every send (each DynamoDB
//! call is a subrequest, the largest part of a send's CPU). A position is an estimate
//! (docs/design.md §5): it may miss what other isolates accepted within the last second.

use std::cell::RefCell;
use std::collections::HashMap;

use shared::ledger::Summary;

/// How long a summary read is used before it is read again.
pub const FRESH_MS: u64 = 1000;
/// Accounts remembered per isolate; past this, stale entries are dropped.
const MAX_ACCOUNTS: usize = 10_000;

/// Per-isolate memory of account summaries.
#[derive(Debug, Default)]
pub struct Positions {
    accounts: RefCell<HashMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    /// `None` while the first read is under way.
    summary: Option<Summary>,
    read_at_ms: u64,
    /// Places taken by this isolate since the read.
    accepted_since: u64,
}

/// Places taken in an account's backlog: they come after `offset` others this isolate
/// took since its read, behind the backlog of `known` (or of a summary still to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub offset: u64,
    pub known: Option<Summary>,
}

impl Reservation {
    /// The backlog ahead of the reserved places, given the summary.
    pub fn ahead(&self, summary: &Summary) -> Summary {
        Summary { queued: summary.queued + self.offset, ..summary.clone() }
    }
}

impl Positions {
    /// Takes `count` places in the account's backlog at once, so that concurrent sends
    /// get distinct places; `known` is `None` when the caller must read the summary
    /// (then [`Self::remember`] it).
    pub fn reserve(&self, account: &str, count: u64, now_ms: u64) -> Reservation {
        let mut accounts = self.accounts.borrow_mut();
        if let Some(seen) = accounts.get_mut(account).filter(|s| now_ms.saturating_sub(s.read_at_ms) < FRESH_MS) {
            let r = Reservation { offset: seen.accepted_since, known: seen.summary.clone() };
            seen.accepted_since += count;
            return r;
        }
        if accounts.len() >= MAX_ACCOUNTS && !accounts.contains_key(account) {
            accounts.retain(|_, s| now_ms.saturating_sub(s.read_at_ms) < FRESH_MS);
            if accounts.len() >= MAX_ACCOUNTS {
                accounts.clear();
            }
        }
        accounts.insert(account.to_owned(), Seen { summary: None, read_at_ms: now_ms, accepted_since: count });
        Reservation { offset: 0, known: None }
    }

    /// Keeps a summary read for a reservation, unless another read got there first.
    pub fn remember(&self, account: &str, summary: &Summary) {
        if let Some(seen) = self.accounts.borrow_mut().get_mut(account) {
            seen.summary.get_or_insert_with(|| summary.clone());
        }
    }

    /// Gives back places of messages that were not queued after all.
    pub fn release(&self, account: &str, count: u64) {
        if let Some(seen) = self.accounts.borrow_mut().get_mut(account) {
            seen.accepted_since = seen.accepted_since.saturating_sub(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(queued: u64) -> Summary {
        Summary { queued, last_sent_at_ms: Some(5), ..Summary::default() }
    }

    #[test]
    fn places_follow_a_fresh_read_and_are_never_shared() {
        let p = Positions::default();
        let first = p.reserve("a", 1, 1_000);
        assert_eq!(first, Reservation { offset: 0, known: None }, "never read: read first");
        // A second send before the read is back: it reads too, but takes the next place.
        let second = p.reserve("a", 1, 1_001);
        assert_eq!(second, Reservation { offset: 1, known: None });
        p.remember("a", &backlog(4));
        p.remember("a", &backlog(5)); // the slower read does not replace the first
        assert_eq!((first.ahead(&backlog(4)), second.ahead(&backlog(4))), (backlog(4), backlog(5)));
        assert_eq!(p.reserve("a", 25, 1_500), Reservation { offset: 2, known: Some(backlog(4)) }, "a mass message takes 25 places");
        p.release("a", 1); // one of them was not queued
        assert_eq!(p.reserve("a", 1, 1_999).offset, 26);
        assert_eq!(p.reserve("b", 1, 1_999).known, None, "accounts are apart");
        assert_eq!(p.reserve("a", 1, 2_000), Reservation { offset: 0, known: None }, "read again after FRESH_MS");
    }

    #[test]
    fn memory_stays_bounded() {
        let p = Positions::default();
        for i in 0..MAX_ACCOUNTS as u64 {
            p.reserve(&format!("acct-{i}"), 1, i);
        }
        let now = MAX_ACCOUNTS as u64;
        p.reserve("newcomer", 1, now);
        let kept = p.accounts.borrow().len();
        assert!(kept < MAX_ACCOUNTS / 5, "stale entries dropped, {kept} kept");
        assert_eq!(p.reserve("newcomer", 1, now).offset, 1);
        assert_eq!(p.reserve(&format!("acct-{}", MAX_ACCOUNTS - 1), 1, now).offset, 1, "fresh ones kept");
    }
}
