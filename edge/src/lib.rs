//! The edge: the public messaging API (docs/design.md §3) as a Cloudflare Worker.
//!
//! Plain Rust logic over a [`platform::Platform`] trait; only [`worker_entry`] (wasm32)
//! touches the Workers runtime. Modules, by concern:
//!
//! - [`api`]: routing and one module per route;
//! - [`auth`]: JWT verification and JWKS keys;
//! - [`config`]: settings from the environment;
//! - [`console`]: the operators' page, served beside the API;
//! - [`sigv4`] and [`aws`]: signed AWS JSON-protocol calls with retries;
//! - [`queue`] (SQS), [`ledger`] (DynamoDB), [`position`] (queue positions),
//!   [`idempotency`];
//! - [`error`]: failures into the error JSON, in one place;
//! - [`http`], [`cors`], [`services`]: request/response data, CORS, per-isolate state.

pub mod api;
pub mod auth;
pub mod aws;
pub mod config;
pub mod console;
pub mod cors;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ledger;
pub mod platform;
pub mod position;
pub mod queue;
pub mod services;
pub mod sigv4;

#[cfg(target_arch = "wasm32")]
mod worker_entry;
