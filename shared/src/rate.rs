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
