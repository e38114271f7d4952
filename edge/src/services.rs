//! The per-isolate state every request shares (settings, the AWS client, the token
//! verifier, the JWKS cache, remembered queue positions) and the per-request handle
//! that pairs it with the runtime ([`Ctx`]).

use std::cell::{Cell, RefCell};

use serde_json::Value;
use shared::error::FieldError;

use crate::auth::{AuthError, JwtVerifier, KeySet};
use crate::aws::{AwsClient, AwsError, Service};
use crate::config::Config;
use crate::platform::{HttpRequest, Platform};
use crate::position::Positions;

/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL_MS: u64 = 10 * 60 * 1000;

/// Everything built once per isolate from the settings.
#[derive(Debug)]
pub struct Edge {
    pub config: Config,
    pub aws: AwsClient,
    pub verifier: JwtVerifier,
    pub positions: Positions,
    /// The keys last fetched, and when.
    jwks: RefCell<Option<(KeySet, u64)>>,
    /// When the JWKS was last asked for, successfully or not: refetches are throttled
    /// on this, so a failing JWKS URL is not asked once per request.
    jwks_attempt: Cell<Option<u64>>,
    /// A fetch is under way: concurrent requests wait for it instead of fetching too.
    jwks_fetching: Cell<bool>,
}

impl Edge {
    pub fn new(config: Config) -> Result<Self, Vec<FieldError>> {
        let aws = AwsClient::new(config.credentials.clone(), &config.region, config.endpoint_url.as_deref())
            .map_err(|e| vec![FieldError::new("AWS_ENDPOINT_URL", e)])?;
        let verifier = JwtVerifier::new(
            config.jwt_secret.as_deref(),
            config.jwt_issuer.clone(),
            config.jwt_audience.clone(),
            config.jwt_account_claim.clone(),
            config.jwt_leeway_seconds,
        );
        Ok(Self {
            config,
            aws,
            verifier,
            positions: Positions::default(),
            jwks: RefCell::new(None),
            jwks_attempt: Cell::new(None),
            jwks_fetching: Cell::new(false),
        })
    }
}

/// One request's view of the isolate state and the runtime.
pub struct Ctx<'a, P> {
    pub p: &'a P,
    pub edge: &'a Edge,
}

impl<P: Platform> Ctx<'_, P> {
    pub fn config(&self) -> &Config {
        &self.edge.config
    }

    pub async fn sqs(&self, operation: &str, body: &impl serde::Serialize) -> Result<Value, AwsError> {
        self.edge.aws.call(self.p, Service::Sqs, operation, body).await
    }

    /// Every call asks for the capacity it consumed (table and each index): what it
    /// costs is then metered from the answers, not estimated (`bench/cost.sh`).
    pub async fn dynamodb(&self, operation: &str, body: &impl serde::Serialize) -> Result<Value, AwsError> {
        let mut body = serde_json::to_value(body).expect("request bodies always serialize");
        if let Value::Object(fields) = &mut body {
            fields.insert("ReturnConsumedCapacity".into(), "INDEXES".into());
        }
        self.edge.aws.call(self.p, Service::DynamoDb, operation, &body).await
    }

    /// Verifies a bearer token, fetching the JWKS when the token names a key we lack.
    pub async fn authenticate(&self, token: &str) -> Result<String, AuthError> {
        let (alg, _) = JwtVerifier::peek(token)?;
        if alg == "HS256" || self.config().jwks_url.is_none() {
            return self.edge.verifier.verify(token, &KeySet::default(), self.p.now_ms());
        }
        let now = self.p.now_ms();
        let fresh = self.edge.jwks.borrow().as_ref().is_some_and(|(_, at)| now.saturating_sub(*at) < JWKS_TTL_MS);
        if !fresh {
            self.refresh_jwks().await;
        }
        match self.verify_with_cached(token) {
            // A token naming a key we lack: the keys may have rotated. Refetched at most
            // once per interval, since anyone can send any `kid`.
            Err(AuthError::UnknownKey(_)) => {
                self.refresh_jwks().await;
                self.verify_with_cached(token)
            }
            other => other,
        }
    }

    fn verify_with_cached(&self, token: &str) -> Result<String, AuthError> {
        let jwks = self.edge.jwks.borrow();
        let empty = KeySet::default();
        let keys = jwks.as_ref().map_or(&empty, |(k, _)| k);
        self.edge.verifier.verify(token, keys, self.p.now_ms())
    }

    /// Fetches the JWKS, unless it was asked for less than the refresh interval ago
    /// (successfully or not), or another request is fetching it now, in which case this
    /// waits for that fetch. On failure the keys it had are kept (and the failure
    /// logged), so a JWKS outage does not lock out tokens signed by known keys.
    async fn refresh_jwks(&self) {
        let Some(url) = self.config().jwks_url.clone() else { return };
        let edge = self.edge;
        if edge.jwks_fetching.get() {
            // Bounded: a fetch under way ends (or fails) well within this.
            for _ in 0..250 {
                if !edge.jwks_fetching.get() {
                    break;
                }
                self.p.sleep_ms(20).await;
            }
            return;
        }
        let now = self.p.now_ms();
        let interval_ms = self.config().jwks_refresh_seconds * 1000;
        if edge.jwks_attempt.get().is_some_and(|at| now.saturating_sub(at) < interval_ms) {
            return;
        }
        edge.jwks_attempt.set(Some(now));
        edge.jwks_fetching.set(true);
        // Cleared however this ends: a request cancelled mid-fetch must not leave it set.
        let _fetching = ClearOnDrop(&edge.jwks_fetching);
        let request = HttpRequest { method: "GET", url, headers: vec![("accept", "application/json".into())], body: Vec::new() };
        let result = match self.p.fetch(request).await {
            Ok(r) if r.status == 200 => KeySet::from_jwks(&r.body),
            Ok(r) => Err(format!("JWKS answered {}", r.status)),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(keys) => *edge.jwks.borrow_mut() = Some((keys, self.p.now_ms())),
            Err(e) => self.p.log_error(&format!("JWKS refresh failed: {e}")),
        }
    }
}

struct ClearOnDrop<'a>(&'a Cell<bool>);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
