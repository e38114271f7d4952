//! The webhook events of the outcomes the ledger records (`Ledger::record`): which
//! endpoints of an account hear of them (an account without endpoints costs no read),
//! and where the events go once written with their outcomes: to the outbox
//! (`crate::outbox`), which delivers them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use shared::webhook::{Endpoint, Pending};
use tokio::sync::{mpsc, OnceCell};

/// How long the worker trusts what it read of an account's endpoints (an account with
/// none costs no read: `EventSink::set_hooked`): an endpoint changed (events, URL) is seen
/// by the outcomes recorded this long after.
const ENDPOINTS_TTL: Duration = Duration::from_secs(60);

/// What the worker read of each account's endpoints, and when: one read at a time per
/// account (the outcomes recorded meanwhile wait for it, not read again).
type EndpointCache = HashMap<String, Arc<(Instant, OnceCell<Arc<Vec<Endpoint>>>)>>;

/// Where `Ledger::record` puts the events of the outcomes it records: it asks which
/// endpoints each account has (cached), and hands the events written to the deliverer.
pub struct EventSink {
    tx: mpsc::UnboundedSender<Pending>,
    /// The accounts with endpoints (`None` until first read: every account may have).
    hooked: Mutex<Option<HashSet<String>>>,
    endpoints: Mutex<EndpointCache>,
    /// How long the writer of an event holds it before another worker may take it.
    pub lease_ms: u64,
}

impl EventSink {
    pub fn new(lease_ms: u64) -> (Arc<Self>, mpsc::UnboundedReceiver<Pending>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { tx, hooked: Mutex::default(), endpoints: Mutex::default(), lease_ms }), rx)
    }

    /// The endpoints of each account that has some, read again when older than
    /// `ENDPOINTS_TTL`; an account without any costs no read.
    pub async fn endpoints<F: std::future::Future<Output = anyhow::Result<Vec<Endpoint>>>>(
        &self,
        accounts: &[&str],
        read: impl Fn(String) -> F,
    ) -> anyhow::Result<HashMap<String, Arc<Vec<Endpoint>>>> {
        if accounts.is_empty() {
            // No outcome of the batch tells an event (claims given back, retries): no work.
            return Ok(HashMap::new());
        }
        let mut accounts = accounts.to_vec();
        accounts.sort_unstable();
        accounts.dedup();
        if let Some(hooked) = self.hooked.lock().expect("not poisoned").as_ref() {
            accounts.retain(|a| hooked.contains(*a));
        }
        let entries: Vec<_> = {
            let mut cache = self.endpoints.lock().expect("not poisoned");
            accounts
                .iter()
                .map(|a| {
                    let entry = cache.entry((*a).to_owned()).or_insert_with(|| Arc::new((Instant::now(), OnceCell::new())));
                    if entry.0.elapsed() >= ENDPOINTS_TTL {
                        *entry = Arc::new((Instant::now(), OnceCell::new()));
                    }
                    entry.clone()
                })
                .collect()
        };
        let read =
            join_all(accounts.iter().zip(&entries).map(|(a, entry)| entry.1.get_or_try_init(|| async { read((*a).to_owned()).await.map(Arc::new) }))).await;
        let mut found = HashMap::new();
        for (a, endpoints) in accounts.iter().zip(read) {
            found.insert((*a).to_owned(), endpoints?.clone());
        }
        Ok(found)
    }

    /// Which accounts have endpoints now (`crate::outbox` reads it every
    /// `WEBHOOK_ENDPOINTS_REFRESH`); older reads of their endpoints go.
    pub fn set_hooked(&self, hooked: HashSet<String>) {
        self.endpoints.lock().expect("not poisoned").retain(|_, entry| entry.0.elapsed() < ENDPOINTS_TTL);
        *self.hooked.lock().expect("not poisoned") = Some(hooked);
    }

    /// Events written with their outcomes: delivered now by this worker.
    pub fn written(&self, events: impl IntoIterator<Item = Pending>) {
        for e in events {
            // The receiver is gone only when the worker stops: the sweep delivers them.
            let _ = self.tx.send(e);
        }
    }
}
