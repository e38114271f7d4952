//! Webhook deliveries, signed as Standard Webhooks 1.0 (`shared::webhook`). An attempt
//! signs the event with every secret its endpoint signs with now (the current one, and
//! one rotated out within its grace) and POSTs it; the answer decides: 2xx delivered,
//! 410 the endpoint is gone (nothing more is sent to it), anything else, or no answer,
//! tried again on the specification's schedule (`shared::webhook::retry_delay_ms`), or
//! later when the receiver's `Retry-After` says so.
//!
//! A tenant's URL never reaches inside our network: the connection goes only to public
//! addresses (a name is resolved here and one resolving to a private, loopback,
//! link-local or reserved address is refused; a literal address is judged as at
//! registration), and redirects are not followed.
//!
//! Deliveries run apart from the send path, each in a task of its own: a slow or dead
//! receiver holds up nothing but its own retries. At most `WEBHOOK_ENDPOINT_CONCURRENCY`
//! attempts are in flight to one endpoint from a worker, the rest waiting their turn:
//! a sweep that takes over an endpoint's whole backlog after its receiver's outage does
//! not open thousands of connections to it at once, and another endpoint's turns are
//! its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use shared::webhook::{self, Endpoint, Event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::gateway::parse_retry_after;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// 410: the receiver says the endpoint is gone for good.
    Gone,
    /// Tried again later: why (never the URL, which may carry a tenant's token), and
    /// the receiver's `Retry-After` when it gave one.
    Failed {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Not tried again: its endpoint was deleted or disabled meanwhile.
    Withdrawn,
    /// Not tried again here: another worker holds the event now (`before_wait`).
    Yielded,
}

/// A failed attempt about to be tried again, or an attempt waiting for its endpoint's
/// turn (`waiting`): what the delivery log records before the wait, when the event's
/// lease is renewed past it.
#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub reason: String,
    pub delay_ms: u64,
    pub waiting: bool,
}

/// Signs and sends events.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    allow_loopback: bool,
    /// The retry schedule divided by this (1 in production; tests compress it).
    compress: u64,
    turns: Turns,
    /// How often an attempt waiting for its endpoint's turn says so (`before_wait`: the
    /// event's lease, twice the timeout and 5 s, renewed), half the receiver's timeout.
    hold_every: Duration,
}

impl Deliverer {
    pub fn new(timeout: Duration, allow_loopback: bool, compress: u64, per_endpoint: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the name itself, past the
            // resolver below.
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly { allow_loopback }))
            .build()?;
        Ok(Self { client, allow_loopback, compress, turns: Turns::new(per_endpoint), hold_every: timeout / 2 })
    }

    /// One attempt, once the endpoint has room for it.
    pub async fn attempt(&self, endpoint: &Endpoint, event: &Event) -> Answer {
        let _turn = self.turns.take(&endpoint.id).await;
        self.send(endpoint, event).await
    }

    /// The endpoint's turn for one attempt. While it waits, `before_wait` hears of it every
    /// `hold_every` (so that the event's lease outlasts the wait: a backlog taken over after
    /// an outage waits here), and `None` when it answers that this task no longer holds the
    /// event. The wait keeps its place in the endpoint's line.
    async fn turn<W: std::future::Future<Output = bool>>(&self, endpoint: &str, attempts: u32, before_wait: &mut impl FnMut(Retry) -> W) -> Option<Turn> {
        let take = self.turns.take(endpoint);
        tokio::pin!(take);
        loop {
            tokio::select! {
                turn = &mut take => return Some(turn),
                _ = tokio::time::sleep(self.hold_every) => {
                    let reason = "waiting for its turn: WEBHOOK_ENDPOINT_CONCURRENCY deliveries to this endpoint in flight".to_owned();
                    if !before_wait(Retry { attempts, reason, delay_ms: self.hold_every.as_millis() as u64, waiting: true }).await {
                        return None;
                    }
                }
            }
        }
    }

    /// One attempt, its turn taken.
    async fn send(&self, endpoint: &Endpoint, event: &Event) -> Answer {
        if let Err(why) = webhook::endpoint_url(&endpoint.url, self.allow_loopback) {
            return Answer::Failed { reason: format!("the endpoint's URL is refused: it {why}"), retry_after_ms: None };
        }
        let body = event.body();
        let now = SystemTime::now();
        let timestamp = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now_ms = timestamp * 1000;
        let signature = webhook::signature(&endpoint.signing_secrets(now_ms), &event.id, timestamp, body.as_bytes());
        let request = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        match request.send().await {
            Ok(r) if r.status().is_success() => Answer::Delivered,
            Ok(r) if r.status().as_u16() == 410 => Answer::Gone,
            Ok(r) => {
                let retry_after_ms =
                    r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now)).map(|d| d.as_millis() as u64);
                Answer::Failed { reason: format!("the receiver answered {}", r.status().as_u16()), retry_after_ms }
            }
            // The error's text may carry the URL: say only what kind of failure it was.
            Err(e) if e.is_timeout() => Answer::Failed { reason: "the receiver did not answer in time".into(), retry_after_ms: None },
            Err(e) if e.is_connect() => Answer::Failed { reason: "the receiver could not be reached".into(), retry_after_ms: None },
            Err(_) => Answer::Failed { reason: "the delivery failed".into(), retry_after_ms: None },
        }
    }

    /// Attempts until delivered, gone, or given up after the schedule's last step. The
    /// task sleeps between attempts (`before_wait` told how long first: it answers
    /// whether this task still holds the event), then reads the
    /// endpoint again (`current`): one deleted or disabled meanwhile is not tried again
    /// (`Withdrawn`), and a secret rotated meanwhile signs the next attempt. The last
    /// answer and how many attempts it took.
    pub async fn deliver<W: std::future::Future<Output = bool>, C: std::future::Future<Output = Option<Endpoint>>>(
        &self,
        endpoint: Endpoint,
        event: &Event,
        mut before_wait: impl FnMut(Retry) -> W,
        mut current: impl FnMut() -> C,
    ) -> (Answer, u32) {
        let mut endpoint = endpoint;
        let mut attempts = 0;
        loop {
            let Some(turn) = self.turn(&endpoint.id, attempts, &mut before_wait).await else { return (Answer::Yielded, attempts) };
            let answer = self.send(&endpoint, event).await;
            drop(turn);
            attempts += 1;
            let Answer::Failed { reason, retry_after_ms } = &answer else { return (answer, attempts) };
            let Some(delay) = webhook::retry_delay_ms(attempts, self.compress, *retry_after_ms) else { return (answer, attempts) };
            tracing::info!(event = %event.id, endpoint = %endpoint.id, attempts, %reason, retry_in_ms = delay, "webhook delivery failed: tried again");
            if !before_wait(Retry { attempts, reason: reason.clone(), delay_ms: delay, waiting: false }).await {
                return (Answer::Yielded, attempts);
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            match current().await {
                Some(now) if now.disabled.is_none() => endpoint = now,
                _ => return (Answer::Withdrawn, attempts),
            }
        }
    }
}

/// Each endpoint's attempts in flight, at most `per_endpoint` at once. An endpoint's
/// semaphore lives while someone holds or awaits it, and leaves the map with the last.
#[derive(Clone)]
struct Turns {
    per_endpoint: usize,
    endpoints: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// One attempt's room at its endpoint, given back when dropped.
struct Turn {
    permit: Option<OwnedSemaphorePermit>,
    endpoint: String,
    turns: Turns,
}

impl Turns {
    fn new(per_endpoint: usize) -> Self {
        Self { per_endpoint: per_endpoint.max(1), endpoints: Arc::default() }
    }

    async fn take(&self, endpoint: &str) -> Turn {
        let semaphore = {
            let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            endpoints.entry(endpoint.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint))).clone()
        };
        let permit = semaphore.acquire_owned().await.expect("a turn's semaphore is never closed");
        Turn { permit: Some(permit), endpoint: endpoint.to_owned(), turns: self.clone() }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut endpoints = self.turns.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody in flight or waiting.
        if endpoints.get(&self.endpoint).is_some_and(|s| Arc::strong_count(s) == 1) {
            endpoints.remove(&self.endpoint);
        }
    }
}

/// Resolves names to their public addresses only (and loopback ones in a local run).
struct PublicOnly {
    allow_loopback: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| reachable(a.ip(), allow_loopback)).collect();
            if allowed.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether a delivery may connect to this address.
fn reachable(ip: IpAddr, allow_loopback: bool) -> bool {
    webhook::public(ip) || (allow_loopback && ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a name resolves to is judged as a literal address is at registration:
    /// only public addresses, and loopback in a local run.
    #[tokio::test]
    async fn a_name_is_judged_by_the_addresses_it_resolves_to() {
        let resolve = |allow_loopback| async move {
            PublicOnly { allow_loopback }.resolve("localhost".parse().unwrap()).await.map(|a| a.map(|s| s.ip()).collect::<Vec<_>>())
        };
        assert!(resolve(false).await.is_err(), "localhost resolves to loopback only");
        assert!(resolve(true).await.unwrap().iter().all(IpAddr::is_loopback));
        for ip in ["10.0.0.1", "192.168.0.1", "169.254.169.254", "fd00:ec2::254", "127.0.0.1"] {
            assert!(!reachable(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(reachable("8.8.8.8".parse().unwrap(), false) && reachable("127.0.0.1".parse().unwrap(), true));
        assert!(!reachable("10.0.0.1".parse().unwrap(), true), "loopback only, not any private address");
    }
}
