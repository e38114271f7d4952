//! The edge's settings, read from the Worker's environment (vars and secrets) once per
//! isolate. Every missing or malformed setting is reported by name; values of secrets
//! are never echoed.

use shared::error::FieldError;
use shared::rate::RateLimit;
use shared::settings::Settings;
use shared::validation::{DEFAULT_MAX_RECIPIENTS, MAX_RECIPIENTS_LIMIT};

use crate::sigv4::Credentials;

/// All settings of the edge.
#[derive(Debug)]
pub struct Config {
    /// `RATE_LIMITER_ENABLED=true`; otherwise the routes that queue answer 503.
    pub rate_limiter_enabled: bool,
    pub queue_url: String,
    pub dlq_url: Option<String>,
    pub ledger_table: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub credentials: Credentials,
    pub jwt_secret: Option<String>,
    pub jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_account_claim: String,
    pub jwt_leeway_seconds: u32,
    /// At most one JWKS refetch this often when tokens name unknown keys.
    pub jwks_refresh_seconds: u64,
    /// The per-account send rate, for queue positions and estimates.
    pub rate: RateLimit,
    pub ledger_ttl_days: u64,
    /// Recipients allowed in one mass message (a campaign).
    pub max_recipients: usize,
    pub idempotency_ttl_hours: u64,
    /// How long a pending idempotency claim holds its key before another request with
    /// the same key and body may take it over (its first request died or lost track).
    pub idempotency_lease_seconds: u64,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Per-account API-call limits (the rate-limiting bindings); off only for load tests.
    pub api_call_limits: bool,
    /// Webhook endpoints on this machine (`http://127.0.0.1`, `localhost`) allowed: local
    /// runs only (a tenant's endpoint must never reach inside our network).
    pub webhook_loopback: bool,
}

impl Config {
    /// Reads the settings through `get` (a var or secret by name).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<FieldError>> {
        let mut s = Settings::new(get);
        let queue_url = s.required("SQS_RATE_LIMITER_QUEUE_URL");
        let region = s.required("AWS_REGION");
        let access_key_id = s.required("AWS_ACCESS_KEY_ID");
        let secret_access_key = s.required("AWS_SECRET_ACCESS_KEY");
        let rate_max = s.number("RATE_LIMIT_MAX", u64::from(RateLimit::DEFAULT.max), 1..=10_000);
        let leeway = s.number("JWT_LEEWAY_SECONDS", 30, 0..=600);
        let jwks_refresh_seconds = s.number("JWKS_REFRESH_INTERVAL_SECONDS", 30, 0..=3600);
        let ledger_ttl_days = s.number("LEDGER_TTL_DAYS", shared::ledger::DEFAULT_TTL_DAYS, 1..=3650);
        let max_recipients = s.number("MAX_RECIPIENTS", DEFAULT_MAX_RECIPIENTS as u64, 1..=MAX_RECIPIENTS_LIMIT as u64) as usize;
        let idempotency_ttl_hours = s.number("IDEMPOTENCY_TTL_HOURS", 24, 24..=24 * 30);
        let idempotency_lease_seconds = s.number("IDEMPOTENCY_LEASE_SECONDS", 60, 1..=3600);
        let window_ms = s.duration_ms("RATE_LIMIT_WINDOW", RateLimit::DEFAULT.window_ms);
        let jwt_secret = s.get("JWT_SECRET");
        let jwks_url = s.get("JWT_JWKS_URL");
        match (&jwt_secret, &jwks_url) {
            (None, None) => s.problem("JWT_SECRET", "is required unless JWT_JWKS_URL is set"),
            (Some(secret), _) if secret.len() < 32 => s.problem("JWT_SECRET", "must be at least 32 bytes"),
            _ => {}
        }
        let endpoint_url = s.get("AWS_ENDPOINT_URL");
        for (name, url) in
            [("JWT_JWKS_URL", jwks_url.clone()), ("AWS_ENDPOINT_URL", endpoint_url.clone()), ("SQS_RATE_LIMITER_QUEUE_URL", Some(queue_url.clone()))]
        {
            if url.as_deref().is_some_and(|u| !(u.is_empty() || u.starts_with("https://") || u.starts_with("http://"))) {
                s.problem(name, "must be an http(s) URL");
            }
        }
        let rate_limiter_enabled = s.flag("RATE_LIMITER_ENABLED", false);
        let api_call_limits = s.flag("API_CALL_LIMITS", true);
        let webhook_loopback = s.flag("WEBHOOK_LOOPBACK", false);
        let config = Config {
            rate_limiter_enabled,
            queue_url,
            dlq_url: s.get("SQS_RATE_LIMITER_DLQ_URL"),
            ledger_table: s.get("LEDGER_TABLE").unwrap_or_else(|| shared::settings::DEFAULT_LEDGER_TABLE.into()),
            region,
            endpoint_url,
            credentials: Credentials { access_key_id, secret_access_key, session_token: s.get("AWS_SESSION_TOKEN") },
            jwt_secret,
            jwks_url,
            jwt_issuer: s.get("JWT_ISSUER"),
            jwt_audience: s.get("JWT_AUDIENCE"),
            jwt_account_claim: s.get("JWT_USER_CLAIM").unwrap_or_else(|| "sub".into()),
            jwt_leeway_seconds: leeway as u32,
            jwks_refresh_seconds,
            rate: RateLimit { max: rate_max as u32, window_ms },
            ledger_ttl_days,
            max_recipients,
            idempotency_ttl_hours,
            idempotency_lease_seconds,
            cors_origins: s
                .get("CORS_ALLOWED_ORIGINS")
                .map(|v| v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect())
                .unwrap_or_default(),
            api_call_limits,
            webhook_loopback,
        };
        s.finish(|| config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("SQS_RATE_LIMITER_QUEUE_URL", "http://127.0.0.1:4566/000000000000/q"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "secret-value"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ("RATE_LIMITER_ENABLED", "true"),
    ];

    #[test]
    fn defaults() {
        let c = Config::from_env(env(BASE)).unwrap();
        assert!(c.rate_limiter_enabled);
        assert_eq!(c.rate, RateLimit::DEFAULT);
        assert_eq!(c.jwt_account_claim, "sub");
        assert_eq!(c.ledger_table, "onlyfans-message-ledger");
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn every_bad_setting_is_named_and_no_secret_is_echoed() {
        let errors = Config::from_env(env(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_SECRET_ACCESS_KEY", "secret-value"),
            ("JWT_SECRET", "short-secret-value"),
            ("RATE_LIMIT_MAX", "0"),
            ("RATE_LIMIT_WINDOW", "soon"),
            ("RATE_LIMITER_ENABLED", "yes"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["SQS_RATE_LIMITER_QUEUE_URL", "AWS_ACCESS_KEY_ID", "RATE_LIMIT_MAX", "RATE_LIMIT_WINDOW", "JWT_SECRET", "RATE_LIMITER_ENABLED"]);
        assert!(!format!("{errors:?}").contains("short-secret-value"));
    }

    #[test]
    fn compressed_window_and_cors() {
        let mut pairs = BASE.to_vec();
        pairs.extend([("RATE_LIMIT_WINDOW", "2s"), ("CORS_ALLOWED_ORIGINS", "https://app.example.com/, https://crm.example.com")]);
        let c = Config::from_env(env(&pairs)).unwrap();
        assert_eq!(c.rate, RateLimit { max: 10, window_ms: 2000 });
        assert_eq!(c.cors_origins, ["https://app.example.com", "https://crm.example.com"]);
    }
}
