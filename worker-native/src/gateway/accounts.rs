//! Each account's id at the vendor, for the vendor adapter's URL: set through the API
//! (`PUT /account/vendor`, on the account's ledger summary), the account id itself
//! when none was set (or without the ledger). Thousands of accounts come and go at
//! runtime, so it is not a setting of the worker: it is read from the ledger while an
//! account's message waits for its slot (the gateway's `prepare`) and kept [`KEPT`], so
//! that a change reaches its sends within that, for one eventually consistent read
//! (half a unit) per sending account and half-minute. Messages of one account taken
//! together may each read it once (no single flight: a few reads per half-minute).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ledger::Ledger;

/// How long an account's vendor id is used before it is read again.
pub const KEPT: Duration = Duration::from_secs(30);

/// Younger than this, a kept id is not read again before a send: what a message waits
/// for its slot (at most `MAX_LEAD_MS`, a second) leaves it well within [`KEPT`].
const FRESH: Duration = Duration::from_secs(25);

/// Accounts' vendor ids, read through and kept [`KEPT`].
#[derive(Clone, Default)]
pub struct VendorAccounts {
    ledger: Option<Ledger>,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    ids: HashMap<String, (String, Instant)>,
    /// Past this many, the stale ones are forgotten (then twice what is left): an
    /// account that stopped sending does not stay for ever, at an amortized cost.
    prune_at: usize,
}

/// The least [`Kept::prune_at`].
const PRUNE_AT: usize = 4096;

impl VendorAccounts {
    pub fn new(ledger: Option<Ledger>) -> Self {
        Self { ledger, kept: Arc::default() }
    }

    /// Reads `account`'s id into the cache unless what is kept there will do for a while
    /// yet ([`FRESH`]): called while its message waits for its slot, so that [`Self::of`]
    /// at the slot reads nothing. When the ledger does not answer, a kept id (however
    /// old) still serves; without one, an error.
    pub async fn prepare(&self, account: &str) -> anyhow::Result<()> {
        let Some(ledger) = &self.ledger else { return Ok(()) };
        let kept_at = self.kept.lock().expect("vendor accounts lock").ids.get(account).map(|(_, at)| *at);
        if kept_at.is_some_and(|at| at.elapsed() < FRESH) {
            return Ok(());
        }
        match ledger.vendor_account(account).await {
            Ok(id) => {
                self.keep(account, id.unwrap_or_else(|| account.to_owned()));
                Ok(())
            }
            Err(e) if kept_at.is_some() => {
                tracing::warn!(error = %format!("{e:#}"), account, "the account's vendor id not read again: the one kept serves");
                Ok(())
            }
            Err(e) => Err(e.context("the account's vendor id (PUT /account/vendor) could not be read from the ledger")),
        }
    }

    /// `account`'s id at the vendor: the one kept (read by [`Self::prepare`] moments
    /// ago), else read now the same way.
    pub async fn of(&self, account: &str) -> anyhow::Result<String> {
        self.prepare(account).await?;
        let kept = self.kept.lock().expect("vendor accounts lock");
        Ok(kept.ids.get(account).map_or_else(|| account.to_owned(), |(id, _)| id.clone()))
    }

    fn keep(&self, account: &str, id: String) {
        let mut kept = self.kept.lock().expect("vendor accounts lock");
        if kept.ids.len() >= kept.prune_at.max(PRUNE_AT) {
            kept.ids.retain(|_, (_, at)| at.elapsed() < KEPT);
            kept.prune_at = 2 * kept.ids.len();
        }
        kept.ids.insert(account.to_owned(), (id, Instant::now()));
    }
}

impl std::fmt::Debug for VendorAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorAccounts").field("ledger", &self.ledger.is_some()).finish()
    }
}
