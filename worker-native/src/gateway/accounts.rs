//! Each account's id at the vendor, for the vendor adapter's URL: set through the API
//! (`PUT /account/vendor`, on the account's ledger summary), the account id itself
//! when none was set (or without the ledger). Thousands of accounts come and go at
//! runtime, so it is not a setting of the worker: it is read from the ledger the first
//! time an account sends and kept [`KEPT`], so that a change reaches its sends within
//! that, for one eventually consistent read (half a unit) per sending account and
//! half-minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ledger::Ledger;

/// How long an account's vendor id is used before it is read again.
pub const KEPT: Duration = Duration::from_secs(30);

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

    /// `account`'s id at the vendor; an error when the ledger could not say.
    pub async fn of(&self, account: &str) -> anyhow::Result<String> {
        let Some(ledger) = &self.ledger else { return Ok(account.to_owned()) };
        if let Some((id, at)) = self.kept.lock().expect("vendor accounts lock").ids.get(account) {
            if at.elapsed() < KEPT {
                return Ok(id.clone());
            }
        }
        let id = ledger.vendor_account(account).await?.unwrap_or_else(|| account.to_owned());
        let mut kept = self.kept.lock().expect("vendor accounts lock");
        if kept.ids.len() >= kept.prune_at.max(PRUNE_AT) {
            kept.ids.retain(|_, (_, at)| at.elapsed() < KEPT);
            kept.prune_at = 2 * kept.ids.len();
        }
        kept.ids.insert(account.to_owned(), (id.clone(), Instant::now()));
        Ok(id)
    }
}

impl std::fmt::Debug for VendorAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorAccounts").field("ledger", &self.ledger.is_some()).finish()
    }
}
