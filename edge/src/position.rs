//! Queue positions without a counter write per send. The account's backlog counter is
//! kept by the worker (added to when it schedules a message, taken from at each
//! outcome); the edge reads it, and each isolate remembers what it read for
//! [`FRESH_MS`] and counts the messages it accepted since. A burst of sends then reads
//! the summary about once a second instead of writing it on every send (each DynamoDB
//! call is a subrequest, the largest part of a send's CPU). A position is an estimate
//! (DESIGN §5): it may miss what other isolates accepted within the last second.

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
    summary: Summary,
    read_at_ms: u64,
    accepted_since: u64,
}

impl Positions {
    /// The account's summary as last read, if fresh, with `queued` counting the messages
    /// this isolate accepted since: the backlog a new message lines up behind.
    pub fn cached(&self, account: &str, now_ms: u64) -> Option<Summary> {
        let accounts = self.accounts.borrow();
        let seen = accounts.get(account).filter(|s| now_ms.saturating_sub(s.read_at_ms) < FRESH_MS)?;
        Some(Summary { queued: seen.summary.queued + seen.accepted_since, ..seen.summary.clone() })
    }

    /// Keeps a summary just read.
    pub fn remember(&self, account: &str, summary: Summary, now_ms: u64) {
        let mut accounts = self.accounts.borrow_mut();
        if accounts.len() >= MAX_ACCOUNTS && !accounts.contains_key(account) {
            accounts.retain(|_, s| now_ms.saturating_sub(s.read_at_ms) < FRESH_MS);
            if accounts.len() >= MAX_ACCOUNTS {
                accounts.clear();
            }
        }
        accounts.insert(account.to_owned(), Seen { summary, read_at_ms: now_ms, accepted_since: 0 });
    }

    /// Counts messages accepted for the account after its summary was read.
    pub fn accepted(&self, account: &str, count: u64) {
        if let Some(seen) = self.accounts.borrow_mut().get_mut(account) {
            seen.accepted_since += count;
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
    fn a_fresh_read_plus_what_was_accepted_since() {
        let p = Positions::default();
        assert_eq!(p.cached("a", 0), None, "never read");
        p.accepted("a", 3); // before any read: nothing to add to
        p.remember("a", backlog(4), 1_000);
        assert_eq!(p.cached("a", 1_000), Some(backlog(4)));
        p.accepted("a", 1);
        p.accepted("a", 25);
        assert_eq!(p.cached("a", 1_999), Some(backlog(30)));
        assert_eq!(p.cached("b", 1_999), None, "accounts are apart");
        assert_eq!(p.cached("a", 2_000), None, "read again after FRESH_MS");
        p.remember("a", backlog(28), 2_000);
        assert_eq!(p.cached("a", 2_000), Some(backlog(28)), "a new read starts the count again");
    }

    #[test]
    fn memory_stays_bounded() {
        let p = Positions::default();
        for i in 0..MAX_ACCOUNTS as u64 {
            p.remember(&format!("acct-{i}"), backlog(1), i);
        }
        let now = MAX_ACCOUNTS as u64;
        p.remember("newcomer", backlog(2), now);
        let kept = p.accounts.borrow().len();
        assert!(kept < MAX_ACCOUNTS / 5, "stale entries dropped, {kept} kept");
        assert_eq!(p.cached("newcomer", now), Some(backlog(2)));
        assert_eq!(p.cached(&format!("acct-{}", MAX_ACCOUNTS - 1), now), Some(backlog(1)), "fresh ones kept");
    }
}
