//! The worker's settings, from environment variables (DESIGN §8). A missing or
//! malformed setting stops the start with a message that names it; secrets are never
//! printed.

use std::time::Duration;

use shared::error::FieldError;
use shared::rate::{parse_duration_ms, RateLimit};
use shared::settings::Settings;

/// Every setting: name, default (None = required or optional, see text), meaning.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("RATE_LIMITER_ENABLED", "false", "must be `true` for the worker to send anything"),
    ("SQS_RATE_LIMITER_QUEUE_URL", "(required)", "the send queue"),
    ("SQS_RATE_LIMITER_DLQ_URL", "(required)", "its dead-letter queue (unreadable messages go there)"),
    ("REDIS_URL / REDIS_ENDPOINT", "(required)", "redis://host:port, or host[:port]; with REDIS_CLUSTER, some nodes, comma-separated"),
    ("REDIS_CLUSTER", "false", "true: Redis Cluster (ElastiCache cluster mode, MemoryDB, Valkey)"),
    ("REDIS_WAIT_REPLICAS", "0", "replicas that must have each take before its messages are sent (WAIT; 1 with a replica)"),
    ("SCHEDULE_SHARDS", "1, or 16 with REDIS_CLUSTER", "virtual shards of the schedule (1..1024), the same on every worker"),
    ("REDIS_KEY_PREFIX", "of:", "prefix of every Redis key (one schedule per prefix)"),
    ("LEDGER_TABLE", "onlyfans-message-ledger", "the DynamoDB ledger table"),
    ("LEDGER_ENABLED", "true", "false = no ledger writes (benchmarks of the schedule only)"),
    ("AWS_REGION", "(required)", "region of the queue, table and metrics"),
    ("AWS_ENDPOINT_URL", "(AWS)", "one endpoint for every AWS service (a local emulator)"),
    ("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY", "(default chain)", "credentials; otherwise the AWS default chain (ECS task role, instance profile)"),
    ("GATEWAY_URL", "(dry run)", "delivery URL template with {accountId} and {recipientId}; unset = dry run (log only)"),
    ("GATEWAY_TOKEN", "(none)", "bearer token for the gateway (secret)"),
    ("GATEWAY_TIMEOUT", "10s", "gateway request timeout"),
    ("RATE_LIMIT_MAX", "10", "sends per account per window"),
    ("RATE_LIMIT_WINDOW", "60s", "the rolling window (60, 60s, 2000ms)"),
    ("RATE_LIMIT_BURST", "1", "sends allowed back to back (1 = evenly spaced); the window rule holds either way"),
    ("RATE_LIMIT_MARGIN", "1% of the window", "added once per RATE_LIMIT_MAX sends against delivery jitter"),
    ("MAX_ATTEMPTS", "3", "delivery attempts before a message fails for good"),
    ("RETRY_BASE_DELAY", "1s", "first retry delay (doubles each attempt, full jitter)"),
    ("RETRY_MAX_DELAY", "60s", "longest retry delay"),
    ("MAX_IN_FLIGHT", "256", "deliveries under way at once per worker"),
    ("TAKE_BATCH", "128", "messages leased per Redis round trip"),
    ("INGEST_TASKS", "4", "concurrent SQS long-poll loops per worker"),
    ("SQS_WAIT_SECONDS", "20", "long-poll wait (1-20); shutdown waits for polls under way"),
    ("LEASE_TIMEOUT", "gateway timeout + 20s", "a worker that dies loses its leases after this; must exceed GATEWAY_TIMEOUT"),
    ("CLOUDWATCH_NAMESPACE", "Huntaze/OnlyFans", "metrics namespace"),
    ("ENVIRONMENT", "dev", "value of the Environment dimension on every metric"),
    ("METRICS_INTERVAL", "60s", "how often metrics are flushed"),
    ("METRICS_ENABLED", "true", "false = no PutMetricData"),
    ("HEALTH_PORT", "8081", "port of GET /healthz and /readyz (0 = off)"),
    ("SHUTDOWN_GRACE", "20s", "on SIGTERM, how long in-flight deliveries may take"),
    ("CLAIM_LEAD", "200ms", "how long before its slot a message is taken at least, to claim it in the ledger first (a cancel never races its send): set it above the ledger's claim latency; messages are taken up to twice the recent claims' time ahead when that is longer, at most 1 s"),
    ("LOG_FORMAT", "text", "text or json"),
    ("RUST_LOG", "info", "log filter"),
];

/// The help text: every variable with its default and meaning.
pub fn help() -> String {
    let mut s = String::from(
        "worker-native: moves messages from SQS into per-account schedules in Redis and sends\n\
         each account's messages through the delivery gateway at its allowed rate.\n\n\
         Usage: worker-native [--help]\n       worker-native healthcheck   exit 0 when the worker on HEALTH_PORT is ready (for container health checks)\n\nConfiguration (environment variables):\n",
    );
    for (name, default, meaning) in SETTINGS {
        s.push_str(&format!("  {name:<42} {meaning} [default: {default}]\n"));
    }
    s
}

#[derive(Debug, Clone)]
pub struct Config {
    pub enabled: bool,
    pub queue_url: String,
    pub dlq_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub redis_cluster: bool,
    pub schedule_shards: u16,
    pub redis_wait_replicas: u32,
    pub ledger_table: String,
    pub ledger_enabled: bool,
    pub gateway_url: Option<String>,
    pub gateway_token: Option<String>,
    pub gateway_timeout: Duration,
    pub rate: RateLimit,
    pub burst: u32,
    pub margin_ms: u64,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_in_flight: usize,
    pub take_batch: usize,
    pub ingest_tasks: usize,
    pub sqs_wait_seconds: i32,
    pub lease: Duration,
    pub namespace: String,
    pub environment: String,
    pub metrics_interval: Duration,
    pub metrics_enabled: bool,
    pub health_port: u16,
    pub shutdown_grace: Duration,
    pub claim_lead: Duration,
    pub json_logs: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, Vec<FieldError>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<FieldError>> {
        let mut s = Settings::new(get);
        let queue_url = s.required("SQS_RATE_LIMITER_QUEUE_URL");
        let dlq_url = s.required("SQS_RATE_LIMITER_DLQ_URL");
        s.required("AWS_REGION");
        let redis_url = match (s.get("REDIS_URL"), s.get("REDIS_ENDPOINT")) {
            (Some(u), _) => u,
            (None, Some(e)) if e.contains("://") => e,
            (None, Some(e)) => format!("redis://{e}"),
            (None, None) => {
                s.problem("REDIS_URL", "is required (or REDIS_ENDPOINT)");
                String::new()
            }
        };
        let ms = Duration::from_millis;
        let rate = RateLimit { max: s.number("RATE_LIMIT_MAX", 10, 1..=1_000_000) as u32, window_ms: s.duration_ms("RATE_LIMIT_WINDOW", 60_000) };
        let gateway_timeout = ms(s.duration_ms("GATEWAY_TIMEOUT", 10_000));
        let retry_base = ms(s.duration_ms("RETRY_BASE_DELAY", 1000));
        let retry_max = ms(s.duration_ms("RETRY_MAX_DELAY", 60_000));
        let lease = ms(s.duration_ms("LEASE_TIMEOUT", gateway_timeout.as_millis() as u64 + 20_000));
        if lease <= gateway_timeout {
            // A lease shorter than a delivery may take expires while the delivery is
            // still under way, and another worker sends the message again.
            s.problem("LEASE_TIMEOUT", format!("must be longer than GATEWAY_TIMEOUT ({} ms), or a slow delivery is sent twice", gateway_timeout.as_millis()));
        }
        let metrics_interval = ms(s.duration_ms("METRICS_INTERVAL", 60_000));
        let shutdown_grace = ms(s.duration_ms("SHUTDOWN_GRACE", 20_000));
        let claim_lead = ms(s.duration_ms("CLAIM_LEAD", 200));
        let margin_ms = match s.get("RATE_LIMIT_MARGIN") {
            None => rate.default_margin_ms(),
            Some(v) => {
                let parsed = match v.strip_suffix('%') {
                    Some(p) => p.trim().parse::<u64>().ok().filter(|p| *p <= 100).map(|p| rate.window_ms * p / 100),
                    None => parse_duration_ms(&v),
                };
                parsed.unwrap_or_else(|| {
                    s.problem("RATE_LIMIT_MARGIN", "must be a duration (100ms) or a percentage of the window (2%)");
                    0
                })
            }
        };
        let burst = s.number("RATE_LIMIT_BURST", 1, 1..=1_000_000);
        let max_attempts = s.number("MAX_ATTEMPTS", 3, 1..=100);
        let max_in_flight = s.number("MAX_IN_FLIGHT", 256, 1..=100_000);
        let take_batch = s.number("TAKE_BATCH", 128, 1..=10_000);
        let ingest_tasks = s.number("INGEST_TASKS", 4, 1..=64);
        let sqs_wait_seconds = s.number("SQS_WAIT_SECONDS", 20, 1..=20);
        let health_port = s.number("HEALTH_PORT", 8081, 0..=65535);
        let redis_cluster = s.flag("REDIS_CLUSTER", false);
        let schedule_shards = s.number("SCHEDULE_SHARDS", if redis_cluster { 16 } else { 1 }, 1..=u64::from(crate::schedule::MAX_SHARDS)) as u16;
        let redis_wait_replicas = s.number("REDIS_WAIT_REPLICAS", 0, 0..=5) as u32;
        let redis_prefix = s.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "of:".into());
        if redis_prefix.contains(['{', '}']) {
            // The shards' hash tags are made of braces around the prefix.
            s.problem("REDIS_KEY_PREFIX", "must not contain { or }");
        }
        let enabled = s.flag("RATE_LIMITER_ENABLED", false);
        let metrics_enabled = s.flag("METRICS_ENABLED", true);
        let ledger_enabled = s.flag("LEDGER_ENABLED", true);
        let json_logs = match s.get("LOG_FORMAT").as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(_) => {
                s.problem("LOG_FORMAT", "must be text or json");
                false
            }
        };
        let config = Config {
            enabled,
            queue_url,
            dlq_url,
            redis_url,
            redis_prefix,
            redis_cluster,
            schedule_shards,
            redis_wait_replicas,
            ledger_table: s.get("LEDGER_TABLE").unwrap_or_else(|| "onlyfans-message-ledger".into()),
            ledger_enabled,
            gateway_url: s.get("GATEWAY_URL"),
            gateway_token: s.get("GATEWAY_TOKEN"),
            gateway_timeout,
            rate,
            burst: burst as u32,
            margin_ms,
            max_attempts: max_attempts as u32,
            retry_base,
            retry_max,
            max_in_flight: max_in_flight as usize,
            take_batch: take_batch as usize,
            ingest_tasks: ingest_tasks as usize,
            sqs_wait_seconds: sqs_wait_seconds as i32,
            lease,
            namespace: s.get("CLOUDWATCH_NAMESPACE").unwrap_or_else(|| "Huntaze/OnlyFans".into()),
            environment: s.get("ENVIRONMENT").unwrap_or_else(|| "dev".into()),
            metrics_interval,
            metrics_enabled,
            health_port: health_port as u16,
            shutdown_grace,
            claim_lead,
            json_logs,
        };
        s.finish(|| config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn names_every_bad_setting() {
        let bad = Config::from_lookup(env(&[("RATE_LIMIT_WINDOW", "soon"), ("MAX_ATTEMPTS", "0"), ("GATEWAY_TOKEN", "s3cret")])).unwrap_err();
        let text = bad.iter().map(|p| format!("{} {}", p.field, p.message)).collect::<Vec<_>>().join("\n");
        for name in ["SQS_RATE_LIMITER_QUEUE_URL", "SQS_RATE_LIMITER_DLQ_URL", "AWS_REGION", "REDIS_URL", "RATE_LIMIT_WINDOW", "MAX_ATTEMPTS"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert!(!text.contains("s3cret"));
        let short = Config::from_lookup(env(&[("GATEWAY_TIMEOUT", "5s"), ("LEASE_TIMEOUT", "5s")])).unwrap_err();
        assert!(short.iter().any(|p| p.field == "LEASE_TIMEOUT" && p.message.contains("GATEWAY_TIMEOUT")), "{short:?}");
    }

    #[test]
    fn defaults_and_compressed_window() {
        let base = [("SQS_RATE_LIMITER_QUEUE_URL", "q"), ("SQS_RATE_LIMITER_DLQ_URL", "d"), ("AWS_REGION", "us-east-1"), ("REDIS_ENDPOINT", "127.0.0.1:6379")];
        let c = Config::from_lookup(env(&base)).unwrap();
        assert_eq!((c.rate, c.burst, c.margin_ms, c.max_attempts), (RateLimit::DEFAULT, 1, 600, 3));
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert!(!c.enabled);
        let mut fast = base.to_vec();
        fast.extend([("RATE_LIMIT_WINDOW", "2s"), ("RATE_LIMIT_MARGIN", "100ms"), ("RATE_LIMITER_ENABLED", "true")]);
        let c = Config::from_lookup(env(&fast)).unwrap();
        assert_eq!((c.rate.window_ms, c.margin_ms, c.enabled), (2000, 100, true));
    }
}
