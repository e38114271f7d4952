//! The native worker (docs/design.md §6): the only consumer of the send queue. It moves each
//! message from SQS into its account's schedule in Redis, sends each account's messages
//! through the delivery gateway at exactly the allowed rate (across any number of
//! worker processes), records outcomes in the ledger and publishes metrics.
//!
//! - [`config`]: settings from the environment, `--help`;
//! - [`schedule`] (+ `lua/`): the per-account queues and the limit, in Redis, over
//!   [`connection`] (one Redis or a cluster); [`credential`]: the limit of the
//!   gateway's API key, shared by every account;
//! - [`ingest`]: SQS → schedule; [`dispatch`]: schedule → claim → gateway → outcomes;
//! - [`recover`]: the schedule rebuilt from the ledger when Redis lost its data;
//! - [`gateway`]: HTTP and dry-run delivery; [`ledger`]: DynamoDB writes;
//! - [`metrics`]: CloudWatch; [`health`]: probes; [`retry`]: backoff;
//!   [`app`]: wiring and shutdown.

pub mod app;
pub mod cancel;
pub mod config;
pub mod connection;
pub mod credential;
pub mod dispatch;
pub mod events;
pub mod gateway;
pub mod health;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod recover;
pub mod retry;
pub mod schedule;
pub mod webhook;

/// The machine's clock, Unix ms (a schedule's own times come from Redis's clock:
/// `schedule`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
