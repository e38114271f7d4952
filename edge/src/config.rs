//! The edge's settings, read from the Worker's environment (vars and secrets) once per
//! isolate. Every missing or malformed setting is reported by name; values of secrets
//! are never echoed.

use shared::error::FieldError;
use shared::rate::RateLimit;

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
    pub idempotency_ttl_hours: u64,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Per-account API-call limits (the rate-limiting bindings); off only for load tests.
    pub api_call_limits: bool,
}

impl Config {
    /// Reads the settings through `get` (a var or secret by name).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut required = |name: &str| {
            get(name).unwrap_or_else(|| {
                errors.push(FieldError::new(name, "is required"));
                String::new()
            })
        };
        let queue_url = required("SQS_RATE_LIMITER_QUEUE_URL");
        let region = required("AWS_REGION");
        let access_key_id = required("AWS_ACCESS_KEY_ID");
        let secret_access_key = required("AWS_SECRET_ACCESS_KEY");

        let mut number = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| -> u64 {
            match get(name).map(|v| v.parse::<u64>()) {
                None => default,
                Some(Ok(v)) if range.contains(&v) => v,
                Some(_) => {
                    errors.push(FieldError::new(name, format!("must be a whole number from {} to {}", range.start(), range.end())));
                    default
                }
            }
        };
        let rate_max = number("RATE_LIMIT_MAX", u64::from(RateLimit::DEFAULT.max), 1..=10_000);
        let leeway = number("JWT_LEEWAY_SECONDS", 30, 0..=600);
        let jwks_refresh_seconds = number("JWKS_REFRESH_INTERVAL_SECONDS", 30, 0..=3600);
        let ledger_ttl_days = number("LEDGER_TTL_DAYS", shared::ledger::DEFAULT_TTL_DAYS, 1..=3650);
        let idempotency_ttl_hours = number("IDEMPOTENCY_TTL_HOURS", 24, 24..=24 * 30);
        let window_ms = match get("RATE_LIMIT_WINDOW").map(|v| shared::rate::parse_duration_ms(&v)) {
            None => RateLimit::DEFAULT.window_ms,
            Some(Some(ms)) if ms > 0 => ms,
            Some(_) => {
                errors.push(FieldError::new("RATE_LIMIT_WINDOW", "must be a duration such as 60, 60s or 2000ms"));
                RateLimit::DEFAULT.window_ms
            }
        };

        let jwt_secret = get("JWT_SECRET");
        let jwks_url = get("JWT_JWKS_URL");
        match (&jwt_secret, &jwks_url) {
            (None, None) => errors.push(FieldError::new("JWT_SECRET", "is required unless JWT_JWKS_URL is set")),
            (Some(s), _) if s.len() < 32 => errors.push(FieldError::new("JWT_SECRET", "must be at least 32 bytes")),
            _ => {}
        }
        for (name, url) in [("JWT_JWKS_URL", &jwks_url), ("AWS_ENDPOINT_URL", &get("AWS_ENDPOINT_URL")), ("SQS_RATE_LIMITER_QUEUE_URL", &Some(queue_url.clone()))] {
            if let Some(u) = url.as_deref().filter(|u| !u.is_empty()) {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    errors.push(FieldError::new(name, "must be an http(s) URL"));
                }
            }
        }
        let api_call_limits = match get("API_CALL_LIMITS").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(_) => {
                errors.push(FieldError::new("API_CALL_LIMITS", "must be true or false"));
                true
            }
        };
        let rate_limiter_enabled = match get("RATE_LIMITER_ENABLED").as_deref() {
            Some("true") => true,
            None | Some("false") => false,
            Some(_) => {
                errors.push(FieldError::new("RATE_LIMITER_ENABLED", "must be true or false"));
                false
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            rate_limiter_enabled,
            queue_url,
            dlq_url: get("SQS_RATE_LIMITER_DLQ_URL"),
            ledger_table: get("LEDGER_TABLE").unwrap_or_else(|| "onlyfans-message-ledger".into()),
            region,
            endpoint_url: get("AWS_ENDPOINT_URL"),
            credentials: Credentials { access_key_id, secret_access_key, session_token: get("AWS_SESSION_TOKEN") },
            jwt_secret,
            jwks_url,
            jwt_issuer: get("JWT_ISSUER"),
            jwt_audience: get("JWT_AUDIENCE"),
            jwt_account_claim: get("JWT_USER_CLAIM").unwrap_or_else(|| "sub".into()),
            jwt_leeway_seconds: leeway as u32,
            jwks_refresh_seconds,
            rate: RateLimit { max: rate_max as u32, window_ms },
            ledger_ttl_days,
            idempotency_ttl_hours,
            cors_origins: get("CORS_ALLOWED_ORIGINS")
                .map(|v| v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect())
                .unwrap_or_default(),
            api_call_limits,
        })
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
