//! Trying again: the one backoff every retry loop of the worker uses (Redis or the
//! ledger down, SQS failing), and the jittered delay between a message's attempts.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

/// Exponential backoff with jitter for attempt `attempt` (1-based): uniform between
/// half and all of `base · 2^(attempt-1)`, capped at `max`.
pub fn jittered(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    Duration::from_millis(rand::rng().random_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64))
}

/// Calls `f` until it succeeds, waiting between tries from `first`, doubling up to
/// `max`; logs the first failure and every twentieth as `what`. With `limit`, gives up
/// (`None`) once it has tried for that long.
pub async fn until_ok<T, E, F, Fut>(what: &str, first: Duration, max: Duration, limit: Option<Duration>, mut f: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = first;
    let mut tries = 0u32;
    loop {
        match f().await {
            Ok(v) => {
                if tries > 0 {
                    tracing::info!(tries = tries + 1, "{what}: done");
                }
                return Some(v);
            }
            Err(e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(20) {
                    tracing::error!(error = %e, tries, "{what}: failed, trying again");
                }
                if limit.is_some_and(|l| started.elapsed() > l) {
                    tracing::error!(tries, "{what}: gave up");
                    return None;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..100 {
            let b1 = jittered(1, base, max);
            assert!(b1 >= Duration::from_millis(50) && b1 <= base);
            let b3 = jittered(3, base, max);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            assert!(jittered(30, base, max) <= max);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_tries_again_and_gives_up_at_its_limit() {
        let mut calls = 0;
        let got = until_ok("test", Duration::from_millis(10), Duration::from_millis(40), None, || {
            calls += 1;
            let ok = calls >= 3;
            async move {
                if ok {
                    Ok(calls)
                } else {
                    Err("not yet")
                }
            }
        })
        .await;
        assert_eq!(got, Some(3));
        let never: Option<()> =
            until_ok("test", Duration::from_millis(10), Duration::from_millis(40), Some(Duration::from_millis(100)), || async { Err("down") }).await;
        assert_eq!(never, None);
    }
}
