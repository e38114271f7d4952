//! The worker's settings, from environment variables (docs/design.md §8). A missing or
//! malformed setting stops the start with a message that names it; secrets are never
//! printed.

use std::time::Duration;

use shared::error::FieldError;
use shared::rate::{parse_duration_ms, RateLimit};
use shared::settings::{Default, Setting, Settings, DEFAULT_LEDGER_TABLE};

/// Every setting of the worker, its default and meaning: `--help` prints it, the parser
/// takes each default from it, and the deploy template's checks read it (through `--help`).
pub const SETTINGS: &[Setting] = &[
    set("RATE_LIMITER_ENABLED", Default::Flag(false), "must be `true` for the worker to send anything"),
    set("SQS_RATE_LIMITER_QUEUE_URL", Default::Required, "the send queue"),
    set("SQS_RATE_LIMITER_DLQ_URL", Default::Required, "its dead-letter queue (unreadable messages go there)"),
    set("REDIS_URL", Default::Required, "redis://host:port (or REDIS_ENDPOINT=host[:port]); with REDIS_CLUSTER, some nodes, comma-separated"),
    set(
        "REDIS_AUTH_TOKEN",
        Default::Unset,
        "password for REDIS_URL's nodes (secret; ElastiCache's auth token, injected by ECS from its own secret so that a rotation needs only new tasks)",
    ),
    set("REDIS_CLUSTER", Default::Flag(false), "true: Redis Cluster (ElastiCache cluster mode, MemoryDB, Valkey)"),
    set("REDIS_WAIT_REPLICAS", Default::Number(0), "replicas that must have each take before its messages are sent (WAIT; 1 with a replica)"),
    set("SCHEDULE_SHARDS", Default::Derived("1, or 16 with REDIS_CLUSTER"), "virtual shards of the schedule (1..1024), the same on every worker"),
    set("REDIS_KEY_PREFIX", Default::Text("of:"), "prefix of every Redis key (one schedule per prefix)"),
    set("LEDGER_TABLE", Default::Text(DEFAULT_LEDGER_TABLE), "the DynamoDB ledger table"),
    set("LEDGER_ENABLED", Default::Flag(true), "false = no ledger writes (benchmarks of the schedule only)"),
    set(
        "LEDGER_TTL_DAYS",
        Default::Number(shared::ledger::DEFAULT_TTL_DAYS),
        "how long a message's ledger item is kept after it finished (1-3650), as the edge's setting",
    ),
    set("AWS_REGION", Default::Required, "region of the queue, table and metrics"),
    set("AWS_ENDPOINT_URL", Default::Unset, "one endpoint for every AWS service (a local emulator); unset: AWS's"),
    set(
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        Default::Unset,
        "credentials; unset: the AWS default chain (ECS task role, instance profile)",
    ),
    set("GATEWAY_URL", Default::Required, "delivery URL template with {accountId} and {recipientId}"),
    set(
        "GATEWAY_DRY_RUN",
        Default::Flag(false),
        "true = no gateway: messages are logged and recorded sent, not delivered (trying the worker out, benchmarks); refused with GATEWAY_URL",
    ),
    set(
        "GATEWAY_KIND",
        Default::Text("http"),
        "the gateway's protocol: http (ours: GATEWAY_URL a template with {accountId} and {recipientId}) or onlyfansapi (OnlyFansAPI.com: GATEWAY_URL its base, https://app.onlyfansapi.com, and GATEWAY_TOKEN its API key)",
    ),
    set("GATEWAY_TOKEN", Default::Unset, "bearer token for the gateway (secret; the API key with GATEWAY_KIND=onlyfansapi)"),
    set("GATEWAY_TIMEOUT", Default::Duration(10_000), "gateway request timeout"),
    set("RATE_LIMIT_MAX", Default::Number(RateLimit::DEFAULT.max as u64), "sends per account per window"),
    set("RATE_LIMIT_WINDOW", Default::Duration(RateLimit::DEFAULT.window_ms), "the rolling window (60, 60s, 2000ms)"),
    set("RATE_LIMIT_BURST", Default::Number(1), "sends allowed back to back (1 = evenly spaced); the window rule holds either way"),
    set("GATEWAY_RATE_LIMIT_MAX", Default::Derived("none"), "sends per gateway credential (the vendor's API key) per window, over all accounts and workers; unset: no such limit"),
    set("GATEWAY_RATE_LIMIT_WINDOW", Default::Duration(60_000), "the credential's rolling window"),
    set("GATEWAY_RATE_LIMIT_MARGIN", Default::Derived("1% of its window"), "as RATE_LIMIT_MARGIN, for the credential's limit"),
    set("RATE_LIMIT_MARGIN", Default::Derived("1% of the window"), "added once per RATE_LIMIT_MAX sends against delivery jitter (100ms, or 2%)"),
    set("MAX_ATTEMPTS", Default::Number(3), "delivery attempts before a message fails for good"),
    set("RETRY_BASE_DELAY", Default::Duration(1_000), "first retry delay (doubles each attempt, full jitter)"),
    set("RETRY_MAX_DELAY", Default::Duration(60_000), "longest retry delay"),
    set("MAX_IN_FLIGHT", Default::Number(256), "deliveries under way at once per worker"),
    set("TAKE_BATCH", Default::Number(128), "messages leased per Redis round trip"),
    set("INGEST_TASKS", Default::Number(4), "concurrent SQS long-poll loops per worker"),
    set("SQS_WAIT_SECONDS", Default::Number(20), "long-poll wait (1-20); shutdown waits for polls under way"),
    set(
        "LEASE_TIMEOUT",
        Default::Derived("GATEWAY_TIMEOUT + 20s"),
        "a worker that dies loses its leases after this; must exceed GATEWAY_TIMEOUT",
    ),
    set("CLOUDWATCH_NAMESPACE", Default::Text("Huntaze/OnlyFans"), "metrics namespace"),
    set("ENVIRONMENT", Default::Text("dev"), "value of the Environment dimension on every metric"),
    set("METRICS_INTERVAL", Default::Duration(60_000), "how often metrics are flushed"),
    set(
        "CAMPAIGN_REST_INTERVAL",
        Default::Duration(600_000),
        "how often a worker takes the campaigns with nothing waiting out of the ledger's waiting index (they expire LEDGER_TTL_DAYS later)",
    ),
    set("METRICS_ENABLED", Default::Flag(true), "false = no PutMetricData"),
    set("HEALTH_PORT", Default::Number(8081), "port of GET /healthz and /readyz (0 = off)"),
    set(
        "SHUTDOWN_GRACE",
        Default::Duration(20_000),
        "on SIGTERM, how often the worker says it still waits for deliveries under way (it never abandons one: their outcomes are recorded)",
    ),
    set(
        "CLAIM_LEAD",
        Default::Duration(200),
        "how long before its slot a busy account's message is taken, to claim it in the ledger first (a cancel never races its send): set it above the ledger's claim latency; messages are taken up to twice the recent claims' time ahead when that is longer, at most 1 s. An idle account's message goes as soon as it is claimed (twice the recent claims' time)",
    ),
    set("WEBHOOK_TIMEOUT", Default::Duration(10_000), "how long a webhook receiver has to answer one delivery"),
    set(
        "WEBHOOK_LOOPBACK",
        Default::Flag(false),
        "true = webhook endpoints on this machine may be delivered to (local runs only); a private, link-local or metadata address never is",
    ),
    set(
        "WEBHOOK_SWEEP_INTERVAL",
        Default::Duration(60_000),
        "how often a worker looks for webhook events whose worker stopped before delivering them (they are taken over once their lease, twice WEBHOOK_TIMEOUT + 5s, ran out)",
    ),
    set(
        "WEBHOOK_ENDPOINTS_REFRESH",
        Default::Duration(60_000),
        "how often a worker reads which accounts have webhook endpoints: an account's first endpoint hears of the outcomes recorded from then on",
    ),
    set(
        "WEBHOOK_ENDPOINT_CONCURRENCY",
        Default::Number(8),
        "the most deliveries a worker has in flight to one webhook endpoint: the rest wait their turn (a sweep after a receiver's outage takes over its whole backlog at once)",
    ),
    set(
        "WEBHOOK_RETRY_COMPRESS",
        Default::Number(1),
        "divides the webhook retry schedule (at once, 5s, 5min, 30min, 2h, 5h, 10h, 14h, 20h, 24h): tests only, 1000 makes hours seconds",
    ),
    set("LOG_FORMAT", Default::Text("text"), "text or json"),
    set("RUST_LOG", Default::Text("info"), "log filter"),
];

const fn set(name: &'static str, default: Default, help: &'static str) -> Setting {
    Setting { name, default, help }
}

/// The port the health server listens on by default (the container health check uses it).
pub fn default_health_port() -> u16 {
    match shared::settings::find(SETTINGS, "HEALTH_PORT").default {
        Default::Number(p) => p as u16,
        _ => unreachable!("HEALTH_PORT is a number"),
    }
}

/// The help text: every variable with its default and meaning.
pub fn help() -> String {
    let mut s = String::from(
        "worker-native: moves messages from SQS into per-account schedules in Redis and sends\n\
         each account's messages through the delivery gateway at its allowed rate.\n\n\
         Usage: worker-native [--help]\n       worker-native healthcheck   exit 0 when the worker on HEALTH_PORT is alive (for container health checks)\n\nConfiguration (environment variables):\n",
    );
    for setting in SETTINGS {
        s.push_str(&format!("  {:<42} {} [default: {}]\n", setting.name, setting.help, setting.default));
    }
    s
}

/// Which protocol the gateway speaks (`crate::gateway`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    Http,
    OnlyFansApi,
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
    pub gateway_dry_run: bool,
    pub ledger_ttl_days: u64,
    pub gateway_token: Option<String>,
    pub gateway_kind: GatewayKind,
    pub gateway_timeout: Duration,
    pub rate: RateLimit,
    /// The gateway credential's limit (`GATEWAY_RATE_LIMIT_MAX`), over all accounts, and
    /// its margin.
    pub gateway_rate: Option<RateLimit>,
    pub gateway_margin_ms: Option<u64>,
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
    /// How often the campaigns with nothing waiting leave the waiting index (`recover::rest_campaigns`).
    pub campaign_rest_interval: Duration,
    pub metrics_enabled: bool,
    pub health_port: u16,
    pub shutdown_grace: Duration,
    pub claim_lead: Duration,
    pub json_logs: bool,
    pub webhook_timeout: Duration,
    pub webhook_loopback: bool,
    pub webhook_retry_compress: u64,
    pub webhook_endpoint_concurrency: usize,
    pub webhook_sweep_interval: Duration,
    pub webhook_endpoints_refresh: Duration,
}

/// A limit's margin: a duration, or a percentage of its window; 1% of the window when
/// unset (`RateLimit::default_margin_ms`).
fn margin_of<F: Fn(&str) -> Option<String>>(s: &mut Settings<F>, name: &str, rate: RateLimit) -> u64 {
    match s.get(name) {
        None => rate.default_margin_ms(),
        Some(v) => {
            let parsed = match v.strip_suffix('%') {
                Some(p) => p.trim().parse::<u64>().ok().filter(|p| *p <= 100).map(|p| rate.window_ms * p / 100),
                None => parse_duration_ms(&v),
            };
            parsed.unwrap_or_else(|| {
                s.problem(name, "must be a duration (100ms) or a percentage of the window (2%)");
                0
            })
        }
    }
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
        let redis_url = match s.get("REDIS_AUTH_TOKEN") {
            Some(token) => with_password(&redis_url, &token),
            None => redis_url,
        };
        let ms = Duration::from_millis;
        let t = SETTINGS;
        let rate = RateLimit { max: s.number_of(t, "RATE_LIMIT_MAX", 1..=1_000_000) as u32, window_ms: s.duration_of(t, "RATE_LIMIT_WINDOW") };
        let gateway_timeout = ms(s.duration_of(t, "GATEWAY_TIMEOUT"));
        let retry_base = ms(s.duration_of(t, "RETRY_BASE_DELAY"));
        let retry_max = ms(s.duration_of(t, "RETRY_MAX_DELAY"));
        let lease = ms(s.duration_ms("LEASE_TIMEOUT", gateway_timeout.as_millis() as u64 + 20_000));
        if lease <= gateway_timeout {
            // A lease shorter than a delivery may take expires while the delivery is
            // still under way, and another worker sends the message again.
            s.problem("LEASE_TIMEOUT", format!("must be longer than GATEWAY_TIMEOUT ({} ms), or a slow delivery is sent twice", gateway_timeout.as_millis()));
        }
        let metrics_interval = ms(s.duration_of(t, "METRICS_INTERVAL"));
        let campaign_rest_interval = ms(s.duration_of(t, "CAMPAIGN_REST_INTERVAL"));
        let shutdown_grace = ms(s.duration_of(t, "SHUTDOWN_GRACE"));
        let claim_lead = ms(s.duration_of(t, "CLAIM_LEAD"));
        let webhook_timeout = ms(s.duration_of(t, "WEBHOOK_TIMEOUT"));
        let webhook_loopback = s.flag_of(t, "WEBHOOK_LOOPBACK");
        let webhook_retry_compress = s.number_of(t, "WEBHOOK_RETRY_COMPRESS", 1..=1_000_000);
        let webhook_endpoint_concurrency = s.number_of(t, "WEBHOOK_ENDPOINT_CONCURRENCY", 1..=10_000) as usize;
        let webhook_sweep_interval = ms(s.duration_of(t, "WEBHOOK_SWEEP_INTERVAL"));
        let webhook_endpoints_refresh = ms(s.duration_of(t, "WEBHOOK_ENDPOINTS_REFRESH"));
        let margin_ms = margin_of(&mut s, "RATE_LIMIT_MARGIN", rate);
        let burst = s.number_of(t, "RATE_LIMIT_BURST", 1..=1_000_000);
        let gateway_rate = s
            .get("GATEWAY_RATE_LIMIT_MAX")
            .map(|_| RateLimit { max: s.number("GATEWAY_RATE_LIMIT_MAX", 1, 1..=1_000_000) as u32, window_ms: s.duration_of(t, "GATEWAY_RATE_LIMIT_WINDOW") });
        let gateway_margin_ms = gateway_rate.map(|rate| margin_of(&mut s, "GATEWAY_RATE_LIMIT_MARGIN", rate));
        if gateway_rate.is_none() {
            for name in ["GATEWAY_RATE_LIMIT_WINDOW", "GATEWAY_RATE_LIMIT_MARGIN"] {
                if s.get(name).is_some() {
                    s.problem(name, "is set without GATEWAY_RATE_LIMIT_MAX: set both, or neither");
                }
            }
        }
        let max_attempts = s.number_of(t, "MAX_ATTEMPTS", 1..=100);
        let max_in_flight = s.number_of(t, "MAX_IN_FLIGHT", 1..=100_000);
        let take_batch = s.number_of(t, "TAKE_BATCH", 1..=10_000);
        let ingest_tasks = s.number_of(t, "INGEST_TASKS", 1..=64);
        let sqs_wait_seconds = s.number_of(t, "SQS_WAIT_SECONDS", 1..=20);
        let health_port = s.number_of(t, "HEALTH_PORT", 0..=65535);
        let redis_cluster = s.flag_of(t, "REDIS_CLUSTER");
        // Derived: one shard on a single Redis, several to spread over a cluster's nodes.
        let schedule_shards = s.number("SCHEDULE_SHARDS", if redis_cluster { 16 } else { 1 }, 1..=u64::from(crate::schedule::MAX_SHARDS)) as u16;
        let redis_wait_replicas = s.number_of(t, "REDIS_WAIT_REPLICAS", 0..=5) as u32;
        let redis_prefix = s.text_of(t, "REDIS_KEY_PREFIX");
        if redis_prefix.contains(['{', '}']) {
            // The shards' hash tags are made of braces around the prefix.
            s.problem("REDIS_KEY_PREFIX", "must not contain { or }");
        }
        let enabled = s.flag_of(t, "RATE_LIMITER_ENABLED");
        let metrics_enabled = s.flag_of(t, "METRICS_ENABLED");
        let ledger_enabled = s.flag_of(t, "LEDGER_ENABLED");
        let ledger_ttl_days = s.number_of(t, "LEDGER_TTL_DAYS", 1..=3650);
        let gateway_dry_run = s.flag_of(t, "GATEWAY_DRY_RUN");
        let gateway_url = s.get("GATEWAY_URL");
        let gateway_kind = match s.text_of(t, "GATEWAY_KIND").as_str() {
            "http" => GatewayKind::Http,
            "onlyfansapi" => {
                if s.get("GATEWAY_TOKEN").is_none() && !gateway_dry_run {
                    s.problem("GATEWAY_TOKEN", "is required with GATEWAY_KIND=onlyfansapi (its API key)");
                }
                GatewayKind::OnlyFansApi
            }
            other => {
                s.problem("GATEWAY_KIND", format!("must be http or onlyfansapi, not {other:?}"));
                GatewayKind::Http
            }
        };
        match (&gateway_url, gateway_dry_run) {
            // A worker that marks messages sent without sending them must be asked for.
            (None, false) => s.problem("GATEWAY_URL", "is required (or GATEWAY_DRY_RUN=true to record messages sent without delivering them)"),
            (Some(_), true) => s.problem("GATEWAY_DRY_RUN", "must not be true with GATEWAY_URL set: choose one"),
            _ => {}
        }
        let json_logs = match s.text_of(t, "LOG_FORMAT").as_str() {
            "text" => false,
            "json" => true,
            _ => {
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
            ledger_table: s.text_of(t, "LEDGER_TABLE"),
            ledger_enabled,
            gateway_url,
            gateway_dry_run,
            ledger_ttl_days,
            gateway_token: s.get("GATEWAY_TOKEN"),
            gateway_kind,
            gateway_timeout,
            rate,
            gateway_rate,
            gateway_margin_ms,
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
            namespace: s.text_of(t, "CLOUDWATCH_NAMESPACE"),
            environment: s.text_of(t, "ENVIRONMENT"),
            metrics_interval,
            campaign_rest_interval,
            metrics_enabled,
            health_port: health_port as u16,
            shutdown_grace,
            claim_lead,
            json_logs,
            webhook_timeout,
            webhook_loopback,
            webhook_retry_compress,
            webhook_endpoint_concurrency,
            webhook_sweep_interval,
            webhook_endpoints_refresh,
        };
        s.finish(|| config)
    }
}

/// Each of the (comma-separated) Redis URLs with `password` as its password, replacing
/// one it has: the token comes apart from the URL, so that the address can be plain
/// configuration and only the token a secret. Characters a URL reserves are
/// percent-encoded.
fn with_password(urls: &str, password: &str) -> String {
    let encoded = crate::gateway::encode(password);
    let one = |url: &str| {
        let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
        let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
        let (user, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (userinfo.split_once(':').map_or(userinfo, |(u, _)| u), host),
            None => ("", authority),
        };
        let path = path.map(|p| format!("/{p}")).unwrap_or_default();
        format!("{scheme}://{user}:{encoded}@{host}{path}")
    };
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(one).collect::<Vec<_>>().join(",")
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
    fn an_auth_token_becomes_each_urls_password() {
        assert_eq!(with_password("rediss://primary.example:6379", "t0k"), "rediss://:t0k@primary.example:6379");
        assert_eq!(with_password("rediss://user:old@h:6379/0", "n/w"), "rediss://user:n%2Fw@h:6379/0");
        assert_eq!(with_password("redis://a:1,redis://b:2,", "x"), "redis://:x@a:1,redis://:x@b:2");
        let c = Config::from_lookup(env(&[
            ("SQS_RATE_LIMITER_QUEUE_URL", "q"),
            ("SQS_RATE_LIMITER_DLQ_URL", "d"),
            ("AWS_REGION", "us-east-1"),
            ("REDIS_URL", "rediss://primary.example:6379"),
            ("REDIS_AUTH_TOKEN", "s3cret"),
            ("GATEWAY_DRY_RUN", "true"),
        ]))
        .unwrap();
        assert_eq!(c.redis_url, "rediss://:s3cret@primary.example:6379");
    }

    #[test]
    fn defaults_and_compressed_window() {
        let base = [
            ("SQS_RATE_LIMITER_QUEUE_URL", "q"),
            ("SQS_RATE_LIMITER_DLQ_URL", "d"),
            ("AWS_REGION", "us-east-1"),
            ("REDIS_ENDPOINT", "127.0.0.1:6379"),
            ("GATEWAY_URL", "http://gw/{accountId}/{recipientId}"),
        ];
        let c = Config::from_lookup(env(&base)).unwrap();
        assert_eq!((c.rate, c.burst, c.margin_ms, c.max_attempts), (RateLimit::DEFAULT, 1, 600, 3));
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert!(!c.enabled);
        assert_eq!(c.ledger_ttl_days, 30);
        let no_gateway: Vec<_> = base.iter().filter(|(k, _)| *k != "GATEWAY_URL").copied().collect();
        let refused = Config::from_lookup(env(&no_gateway)).unwrap_err();
        assert!(refused.iter().any(|p| p.field == "GATEWAY_URL" && p.message.contains("GATEWAY_DRY_RUN")), "{refused:?}");
        let mut dry = no_gateway.clone();
        dry.push(("GATEWAY_DRY_RUN", "true"));
        assert!(Config::from_lookup(env(&dry)).unwrap().gateway_dry_run);
        let mut fast = base.to_vec();
        fast.extend([("RATE_LIMIT_WINDOW", "2s"), ("RATE_LIMIT_MARGIN", "100ms"), ("RATE_LIMITER_ENABLED", "true")]);
        let c = Config::from_lookup(env(&fast)).unwrap();
        assert_eq!((c.rate.window_ms, c.margin_ms, c.enabled), (2000, 100, true));
    }
}
