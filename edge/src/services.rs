//! The per-isolate state every request shares (settings, the AWS client, the token
//! verifier, the JWKS cache, remembered queue positions) and the per-request handle
//! that pairs it with the runtime ([`Ctx`]).

use std::cell::RefCell;

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
    jwks: RefCell<Option<(KeySet, u64)>>,
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
        Ok(Self { config, aws, verifier, positions: Positions::default(), jwks: RefCell::new(None) })
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

    pub async fn dynamodb(&self, operation: &str, body: &impl serde::Serialize) -> Result<Value, AwsError> {
        self.edge.aws.call(self.p, Service::DynamoDb, operation, body).await
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
        let first = self.verify_with_cached(token);
        match first {
            // At most one refetch per interval: an attacker can send any `kid`.
            Err(AuthError::UnknownKey(_)) if self.jwks_age_ms() >= self.config().jwks_refresh_seconds * 1000 => {
                self.refresh_jwks().await;
                self.verify_with_cached(token)
            }
            other => other,
        }
    }

    fn jwks_age_ms(&self) -> u64 {
        self.edge.jwks.borrow().as_ref().map_or(u64::MAX, |(_, at)| self.p.now_ms().saturating_sub(*at))
    }

    fn verify_with_cached(&self, token: &str) -> Result<String, AuthError> {
        let jwks = self.edge.jwks.borrow();
        let empty = KeySet::default();
        let keys = jwks.as_ref().map_or(&empty, |(k, _)| k);
        self.edge.verifier.verify(token, keys, self.p.now_ms())
    }

    /// Fetches the JWKS; on failure keeps the keys it had (and logs), so a JWKS outage
    /// does not lock out tokens signed by known keys.
    async fn refresh_jwks(&self) {
        let Some(url) = self.config().jwks_url.clone() else { return };
        let request = HttpRequest { method: "GET", url, headers: vec![("accept", "application/json".into())], body: Vec::new() };
        let result = match self.p.fetch(request).await {
            Ok(r) if r.status == 200 => KeySet::from_jwks(&r.body),
            Ok(r) => Err(format!("JWKS answered {}", r.status)),
            Err(e) => Err(e.to_string()),
        };
        let now = self.p.now_ms();
        let mut jwks = self.edge.jwks.borrow_mut();
        match result {
            Ok(keys) => *jwks = Some((keys, now)),
            Err(e) => {
                self.p.log_error(&format!("JWKS refresh failed: {e}"));
                // Keep the old keys, but note the attempt so refetches stay throttled.
                let keys = jwks.take().map(|(k, _)| k).unwrap_or_default();
                let retry_in = (self.config().jwks_refresh_seconds * 1000).min(JWKS_TTL_MS);
                *jwks = Some((keys, now.saturating_sub(JWKS_TTL_MS - retry_in)));
            }
        }
    }
}
