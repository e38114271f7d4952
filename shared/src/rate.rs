//! The per-account send rate, the rule that keeps it, and what follows from it for the
//! client: where a new message stands in its account's backlog and when it should go.
//!
//! The rule (docs/design.md §6), kept by the schedule in `worker-native/src/lua/common.lua`:
//! at most `max` sends in any rolling `window`. Sends are spaced by `window / max`, and
//! every `max`-th send waits a margin once more (against delivery jitter), so that any
//! `max + 1` sends are at least a window and the margin apart. A message behind others of
//! its account therefore goes out [`RateLimit::offset_ms`] after the account's next free
//! slot: the estimates here and the schedule there follow the same rule.

/// An account's allowed rate: `max` sends per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window_ms: u64,
}

impl RateLimit {
    /// OnlyFans' limit: 10 messages a minute.
    pub const DEFAULT: RateLimit = RateLimit { max: 10, window_ms: 60_000 };

    /// The safety margin when none is configured: 1% of the window, against delivery
    /// jitter between our clock and the provider's.
    pub fn default_margin_ms(&self) -> u64 {
        self.window_ms / 100
    }

    /// Time between two sends of one account.
    pub fn spacing_ms(&self) -> u64 {
        self.window_ms / u64::from(self.max.max(1))
    }

    /// How long after a free slot the `n`-th next send (0-based) of a busy account goes:
    /// `n` spacings, and the margin once for every `max` of them.
    pub fn offset_ms(&self, n: u64, margin_ms: u64) -> u64 {
        n * self.spacing_ms() + n / u64::from(self.max.max(1)) * margin_ms
    }

    /// Human form used by `GET /status`, e.g. `10 messages/minute`.
    pub fn describe(&self) -> String {
        match self.window_ms {
            60_000 => format!("{} messages/minute", self.max),
            3_600_000 => format!("{} messages/hour", self.max),
            w if w % 1000 == 0 => format!("{} messages/{} seconds", self.max, w / 1000),
            w => format!("{} messages/{} ms", self.max, w),
        }
    }

    /// When the message at 1-based `position` in its account's backlog should be sent,
    /// given the time of the account's last send (if any) and now, at the default margin.
    pub fn estimated_send_ms(&self, position: u64, last_sent_ms: Option<u64>, now_ms: u64) -> u64 {
        let next_free = last_sent_ms.map_or(now_ms, |last| (last + self.spacing_ms()).max(now_ms));
        next_free + self.offset_ms(position.saturating_sub(1), self.default_margin_ms())
    }

    /// Seconds until a backlog of `backlog` messages is drained (at the default margin).
    pub fn drain_seconds(&self, backlog: u64) -> u64 {
        self.offset_ms(backlog, self.default_margin_ms()).div_ceil(1000)
    }

    /// How many of an account's last sends its summary keeps (`GET /status`'s window
    /// meter and the console's timeline of the last two windows): two windows' worth and
    /// two more, so that the sends of the last two windows are all there, at most
    /// [`RECENT_SENDS_KEPT_MAX`] (above 15 sends a window the timeline sees that many,
    /// above 31 the meter too).
    pub fn recent_sends_kept(&self) -> u64 {
        (2 * u64::from(self.max) + 2).min(RECENT_SENDS_KEPT_MAX)
    }

    /// Where the send taken for `slot_ms` is kept among them: its slot's number in
    /// spacings, modulo how many are kept. Two slots of an account are at least a
    /// spacing apart (evenly spaced sends, `RATE_LIMIT_BURST` 1), so the sends of the
    /// last [`Self::recent_sends_kept`] spacings have keys of their own, and a key is
    /// reused only by a send two windows and two spacings later: no write has to read
    /// which one is oldest. (Bursts put two sends on one slot, and an account given a
    /// faster limit of its own sends closer than this spacing: the meter counts fewer.)
    pub fn recent_send_key(&self, slot_ms: u64) -> u64 {
        (slot_ms / self.spacing_ms().max(1)) % self.recent_sends_kept()
    }

    /// The window meter from the times of the last sends (ms, any order): how many fall
    /// in the rolling window ending `now_ms` (a send stamped later than now counts: the
    /// times are the schedule's clock, which may run a little ahead of the reader's), and
    /// when the next send may go by the rule (a spacing after the last; with `max` sends
    /// kept, a window and the margin after the `max`-th latest), not before now.
    pub fn meter(&self, recent: &[u64], now_ms: u64, margin_ms: u64) -> Meter {
        let mut sends = recent.to_vec();
        sends.sort_unstable();
        let in_window = sends.iter().filter(|&&t| t + self.window_ms > now_ms).count() as u64;
        let after_last = sends.last().map_or(0, |last| last + self.spacing_ms());
        let window_full = match sends.len().checked_sub(self.max as usize) {
            Some(i) if self.max > 0 => sends[i] + self.window_ms + margin_ms,
            _ => 0,
        };
        Meter { in_window, next_send_ms: after_last.max(window_full).max(now_ms) }
    }
}

/// The most sends an account's summary keeps for the window meter (each ~11 bytes of
/// the summary, which every outcome writes: it stays well under 1 KB).
pub const RECENT_SENDS_KEPT_MAX: u64 = 32;

/// What the window meter shows (see [`RateLimit::meter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// Sends in the rolling window ending now.
    pub in_window: u64,
    /// When the next send may go (ms), by the rule.
    pub next_send_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_and_estimates() {
        let r = RateLimit::DEFAULT;
        assert_eq!(r.spacing_ms(), 6000);
        assert_eq!(r.describe(), "10 messages/minute");
        // Idle account: the first message goes now, the third two spacings later.
        assert_eq!(r.estimated_send_ms(1, None, 1000), 1000);
        assert_eq!(r.estimated_send_ms(3, None, 1000), 13_000);
        // Just sent: the next slot is one spacing after the last send.
        assert_eq!(r.estimated_send_ms(1, Some(900), 1000), 6900);
        // Long idle: a stale last send does not pull the estimate into the past.
        assert_eq!(r.estimated_send_ms(1, Some(0), 100_000), 100_000);
        // 25 messages: 25 spacings and, past each 10, the margin (600 ms) twice.
        assert_eq!(r.drain_seconds(25), 152);
        assert_eq!(r.estimated_send_ms(11, None, 0), 10 * 6000 + 600, "the eleventh waits the margin once");
        assert_eq!(RateLimit { max: 10, window_ms: 2000 }.describe(), "10 messages/2 seconds");
    }

    /// Evenly spaced slots have keys of their own across a window and two spacings, and
    /// the meter counts the window's sends only.
    #[test]
    fn the_last_sends_and_the_window_meter() {
        let r = RateLimit::DEFAULT;
        assert_eq!(r.recent_sends_kept(), 22);
        assert_eq!(RateLimit { max: 1000, window_ms: 1000 }.recent_sends_kept(), RECENT_SENDS_KEPT_MAX);
        // Slots a spacing apart or more (here a little late each, and the margin after
        // every tenth), never on one key within two windows.
        let slots: Vec<u64> = (0..21).map(|i| 1_000_000 + i * 6000 + i * 37 + i / 10 * 600).collect();
        assert!(slots[20] - slots[0] < 2 * r.window_ms + 2 * r.spacing_ms());
        let keys: std::collections::BTreeSet<u64> = slots.iter().map(|&s| r.recent_send_key(s)).collect();
        assert_eq!(keys.len(), 21);
        // Seven sends 6 s apart, the last 1 s ago: all seven in the window, the next 5 s away.
        let now = 100_000;
        let sends: Vec<u64> = (0..7).map(|i| now - 1000 - i * 6000).collect();
        assert_eq!(r.meter(&sends, now, 600), Meter { in_window: 7, next_send_ms: now + 5000 });
        // Ten in the window: the next waits for the first to leave it, and the margin.
        let full: Vec<u64> = (0..10).map(|i| now - 1000 - i * 5000).collect();
        assert_eq!(r.meter(&full, now, 600), Meter { in_window: 10, next_send_ms: now - 1000 - 45_000 + 60_000 + 600 });
        // Ten kept, the first just out of the window: the next still waits for the margin.
        let first_out: Vec<u64> = (0..10).map(|i| now - 60_100 + i * 6000).collect();
        assert_eq!(r.meter(&first_out, now, 600), Meter { in_window: 9, next_send_ms: now + 500 });
        // A send stamped a little ahead of the reader's clock counts.
        assert_eq!(r.meter(&[now + 5], now, 600).in_window, 1);
        // Old sends count for nothing, and the next may go now.
        assert_eq!(r.meter(&[now - 60_000, now - 90_000], now, 600), Meter { in_window: 0, next_send_ms: now });
        assert_eq!(r.meter(&[], now, 600), Meter { in_window: 0, next_send_ms: now });
    }
}

/// Parses a duration setting: `60` (seconds), `60s`, `2000ms`, `1m`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, scale) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = s.strip_suffix('m') {
        (d, 60_000)
    } else {
        (s, 1000)
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("60"), Some(60_000));
        assert_eq!(parse_duration_ms("2s"), Some(2000));
        assert_eq!(parse_duration_ms("2000ms"), Some(2000));
        assert_eq!(parse_duration_ms("1m"), Some(60_000));
        assert_eq!(parse_duration_ms("soon"), None);
        assert_eq!(parse_duration_ms("-1"), None);
    }
}
