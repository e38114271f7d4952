//! What the API logic needs from the runtime, as a trait: outbound HTTP, the clock,
//! randomness, timers, the per-account API-call limiter and logging. The Worker entry
//! implements it over workers-rs; everything above it is plain Rust.

#![allow(async_fn_in_trait)] // single-threaded wasm: no Send bound wanted

/// An outbound HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The answer to an outbound request.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The request could not be made or got no answer (DNS, refused, reset).
#[derive(Debug, thiserror::Error)]
#[error("request failed: {0}")]
pub struct FetchError(pub String);

/// The runtime services the API logic uses.
pub trait Platform {
    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError>;
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    fn fill_random(&self, buf: &mut [u8]);
    async fn sleep_ms(&self, ms: u64);
    /// Whether this account may make one more API call now, by the Workers
    /// rate-limiting binding named `limiter`; `true` when no such binding exists.
    async fn allow_api_call(&self, limiter: &'static str, account: &str) -> bool;
    /// The request's body, read from its stream only after the caller decided to: at
    /// most `limit` bytes (`None` when it is longer; the rest is not read).
    async fn read_body(&self, limit: usize) -> Result<Option<Vec<u8>>, FetchError>;
    /// An operator-facing log line. Callers never pass secrets or message content.
    fn log_error(&self, message: &str);
}
