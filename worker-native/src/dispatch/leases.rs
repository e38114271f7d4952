//! The leases this worker holds: every message taken and not yet completed in Redis,
//! and when it was taken; and their renewal while outcomes wait for a slow or down
//! ledger, so that another worker does not take them and send them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::schedule::{Schedule, Taken};

/// Messages taken and not yet completed in Redis, by id, with when each was taken.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, (Taken, Instant)>>>);

impl InFlight {
    /// Holds `taken`; false when this worker holds that message already (the schedule
    /// handed it out twice: a rebuild after a loss), which it then does not take again.
    pub fn hold(&self, taken: &Taken) -> bool {
        let mut held = self.0.lock().expect("in-flight lock");
        if held.contains_key(&taken.id) {
            return false;
        }
        held.insert(taken.id.clone(), (taken.clone(), Instant::now()));
        true
    }

    pub fn release(&self, id: &str) {
        self.0.lock().expect("in-flight lock").remove(id);
    }

    /// Those held for at least `age`.
    fn older_than(&self, age: Duration) -> Vec<Taken> {
        self.0.lock().expect("in-flight lock").values().filter(|(_, at)| at.elapsed() >= age).map(|(t, _)| t.clone()).collect()
    }

    pub fn drain(&self) -> Vec<Taken> {
        self.0.lock().expect("in-flight lock").drain().map(|(_, (t, _))| t).collect()
    }
}

/// Renews the leases of messages held for more than a third of the lease (normally
/// none: an outcome is recorded within milliseconds; a slow or down ledger holds them).
pub async fn renew(schedule: Schedule, held: InFlight, lease: Duration, mut stop: watch::Receiver<bool>) {
    let every = lease / 3;
    while !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        let old = held.older_than(every);
        if old.is_empty() {
            continue;
        }
        match schedule.renew(&old, lease.as_millis() as u64).await {
            Ok(n) => tracing::warn!(held = old.len(), renewed = n, "outcomes still being recorded: leases renewed"),
            Err(e) => tracing::error!(error = %e, "leases not renewed"),
        }
    }
}
