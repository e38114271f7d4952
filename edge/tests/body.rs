//! The request body is read through the platform only after the token
//! is checked, never when the declared size is over the limit, and at most up to the
//! limit otherwise. The real router and handlers run over a platform that serves a
//! body and counts its reads (`wrangler dev` holds every answer until the upload
//! ends, so the order cannot be seen from outside there; `edge/js/glue.test.mjs`
//! checks that the glue stops reading at the limit).

use std::cell::{Cell, RefCell};

use edge::api;
use edge::config::Config;
use edge::http::ApiRequest;
use edge::platform::{FetchError, HttpRequest, HttpResponse, Platform};
use edge::services::Edge;
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use shared::validation::MAX_BODY_BYTES;

const SECRET: &str = "body-test-secret-0123456789abcdef0123456789";

/// Serves `body` to `read_body` (None: longer than any limit) and counts the reads.
struct CountingPlatform {
    body: Option<Vec<u8>>,
    reads: Cell<usize>,
    limits: RefCell<Vec<usize>>,
}

impl Platform for CountingPlatform {
    async fn fetch(&self, _: HttpRequest) -> Result<HttpResponse, FetchError> {
        Err(FetchError("no network in this test".into()))
    }
    fn now_ms(&self) -> u64 {
        1_795_586_400_000
    }
    fn fill_random(&self, buf: &mut [u8]) {
        buf.fill(7);
    }
    async fn sleep_ms(&self, _: u64) {}
    async fn allow_api_call(&self, _: &'static str, _: &str) -> bool {
        true
    }
    async fn read_body(&self, limit: usize) -> Result<Option<Vec<u8>>, FetchError> {
        self.reads.set(self.reads.get() + 1);
        self.limits.borrow_mut().push(limit);
        Ok(self.body.clone().filter(|b| b.len() <= limit))
    }
    fn log_error(&self, _: &str) {}
}

fn edge() -> Edge {
    let setting = |name: &str| {
        Some(
            match name {
                "SQS_RATE_LIMITER_QUEUE_URL" => "http://127.0.0.1:9/queue",
                "AWS_REGION" => "us-east-1",
                "AWS_ACCESS_KEY_ID" => "AKIDEXAMPLE",
                "AWS_SECRET_ACCESS_KEY" => "secret",
                "JWT_SECRET" => SECRET,
                "RATE_LIMITER_ENABLED" => "true",
                _ => return None,
            }
            .to_owned(),
        )
    };
    Edge::new(Config::from_env(setting).expect("settings")).expect("edge")
}

fn send(p: &CountingPlatform, token: Option<&str>, declared: Option<usize>) -> u16 {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    if let Some(n) = declared {
        headers.push(("content-length".into(), n.to_string()));
    }
    let request = ApiRequest { method: "POST".into(), path: "/api/onlyfans/messaging/send".into(), query: String::new(), headers };
    let edge = edge();
    futures::executor::block_on(api::handle(p, Ok(&edge), request)).status
}

fn platform(body: Option<Vec<u8>>) -> CountingPlatform {
    CountingPlatform { body, reads: Cell::new(0), limits: RefCell::new(Vec::new()) }
}

fn token() -> String {
    let mut claims = Claims::new(serde_json::json!({"sub": "creator-1"}));
    claims.expiration = chrono::DateTime::from_timestamp_millis(1_795_586_400_000 + 3_600_000);
    Hs256.token(&Header::empty(), &claims, &Hs256Key::new(SECRET.as_bytes())).unwrap()
}

#[test]
fn no_token_no_read() {
    let p = platform(Some(b"{}".to_vec()));
    assert_eq!(send(&p, None, None), 401);
    assert_eq!(send(&p, Some("not.a.token"), None), 401);
    assert_eq!(p.reads.get(), 0, "the body is not read before the token is checked");
}

#[test]
fn a_declared_size_over_the_limit_is_refused_unread() {
    let p = platform(Some(b"{}".to_vec()));
    assert_eq!(send(&p, Some(&token()), Some(MAX_BODY_BYTES + 1)), 413);
    assert_eq!(p.reads.get(), 0);
}

#[test]
fn an_undeclared_body_is_read_up_to_the_limit_only() {
    let p = platform(None); // longer than the limit, no Content-Length (chunked)
    assert_eq!(send(&p, Some(&token()), None), 413);
    assert_eq!(*p.limits.borrow(), [MAX_BODY_BYTES]);
    let p = platform(Some(b"not json".to_vec()));
    assert_eq!(send(&p, Some(&token()), None), 400, "a body within the limit is read and parsed");
    assert_eq!(p.reads.get(), 1);
}
