//! Types and rules shared by the edge and the native worker.
//!
//! Everything here is plain data and pure functions: no I/O, no runtime, so it builds
//! for `wasm32-unknown-unknown` and the host alike and is tested on the host.
//!
//! - [`message`]: the send request and the validated message;
//! - [`queue`]: what travels in the send queue (messages, campaigns, holds, cancels);
//! - [`validation`]: the limits of docs/design.md §3, every bad field reported at once;
//! - [`api`]: the JSON shapes the edge answers with;
//! - [`error`]: the stable error codes and the error JSON;
//! - [`campaign`]: mass messages stored once, their derived message ids and progress;
//! - [`ledger`]: the DynamoDB ledger item layout and its status machine;
//! - [`rate`]: the per-account rate and the send-time estimate derived from it;
//! - [`id`] and [`time`]: UUIDv7 message ids and RFC 3339 timestamps;
//! - [`settings`]: reading configuration, every bad setting reported by name;
//! - [`webhook`]: Standard Webhooks signatures, and which endpoint URLs may be registered.

pub mod api;
pub mod campaign;
pub mod error;
pub mod id;
pub mod ledger;
pub mod message;
pub mod queue;
pub mod rate;
pub mod settings;
pub mod time;
pub mod validation;
pub mod webhook;
