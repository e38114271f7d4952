//! Benchmark of the dispatch path through one Redis: the worker's own schedule and
//! dispatcher with a no-op gateway, no SQS and no ledger. 1,000 accounts and a backlog
//! of 100,000 messages whose limit does not bind; prints messages/s and Redis round
//! trips per message as one JSON line.
//!
//!     cargo run --release -p worker-native --example dispatch_bench -- \
//!         --redis redis://127.0.0.1:6390 [--accounts 1000] [--messages 100000] [--margin-ms N]
//!         [--cluster --shards 16 [--wait-replicas 1]]   (--redis then lists the cluster's nodes)
//!
//! It also prints how evenly the schedule's shards carried the messages (each shard's
//! share against an even split).
//!
//! With `--load-only PREFIX` it only fills the schedule under that key prefix (for the
//! worker benchmarks, which then start real worker processes on it).
//!
//! With `--credential MAX/WINDOW_MS` the gateway credential's limit binds (every account
//! sends through one API key, `lua/credential.lua`): it also prints the most sends in
//! any window at the gateway's clock against MAX, the rate against the limit's, and
//! each account's share of the first half of the sends (min and max, against an even
//! share).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::message::QueueMessage;
use shared::rate::RateLimit;
use tokio::sync::{watch, Notify};
use worker_native::credential::CredentialLimit;
use worker_native::dispatch::{DispatchConfig, Dispatcher};
use worker_native::gateway::{Delivery, Gateway};
use worker_native::metrics::Metrics;
use worker_native::schedule::{Limits, Schedule, MAX_LEAD_MS};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn message(account: usize, seq: usize, now_ms: u64) -> QueueMessage {
    let mut random = [0u8; 8];
    random[..4].copy_from_slice(&(account as u32).to_be_bytes());
    random[4..].copy_from_slice(&(seq as u32).to_be_bytes());
    QueueMessage {
        id: shared::id::uuid_v7(now_ms, (seq % 4096) as u16, random),
        creator_id: format!("acct-{account:05}"),
        recipient_id: format!("fan-{seq}"),
        content: "x".repeat(100),
        media_urls: vec![],
        priority: 5,
        metadata: Default::default(),
        accepted_at: shared::time::rfc3339_ms(now_ms),
        generation: 0,
        send_at: None,
        campaign_id: None,
        vendor_media: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = arg("--redis", "redis://127.0.0.1:6390");
    let accounts: usize = arg("--accounts", "1000").parse()?;
    let total: usize = arg("--messages", "100000").parse()?;
    let load_only = std::env::args().any(|a| a == "--load-only");
    let prefix = if load_only { arg("--load-only", "bench:") } else { format!("bench{}:", std::process::id()) };
    // A limit that is enforced but does not bind: a million a second per account, with
    // the default margin unless told (the margin costs one more command per message).
    let rate = RateLimit { max: 1_000_000, window_ms: 1000 };
    let margin_ms: u64 = arg("--margin-ms", &rate.default_margin_ms().to_string()).parse()?;
    let limits = Limits { rate, burst: 1, margin_ms };
    let cluster = std::env::args().any(|a| a == "--cluster");
    let shards: u16 = arg("--shards", if cluster { "16" } else { "1" }).parse()?;
    let conn = worker_native::connection::RedisConn::open(&redis, cluster)?;
    let wait_replicas: u32 = arg("--wait-replicas", "0").parse()?;
    let schedule = Schedule::sharded(conn.clone(), prefix.clone(), limits, shards, cluster).with_replicas(wait_replicas);

    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let started = Instant::now();
    for start in (0..total).step_by(10) {
        let chunk: Vec<QueueMessage> = (start..(start + 10).min(total)).map(|i| message(i % accounts, i / accounts, now_ms)).collect();
        schedule.enqueue(&chunk).await?; // as ingest does: one SQS batch per call
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    if load_only {
        println!("{}", serde_json::json!({"loaded": total, "accounts": accounts, "prefix": prefix, "seconds": enqueue_secs}));
        return Ok(());
    }
    let enqueue_trips = schedule.round_trips();
    let credential = match std::env::args().any(|a| a == "--credential") {
        true => {
            let spec = arg("--credential", "");
            let (max, window) = spec.split_once('/').ok_or_else(|| anyhow::anyhow!("--credential MAX/WINDOW_MS, not {spec:?}"))?;
            Some(RateLimit { max: max.parse()?, window_ms: window.parse()? })
        }
        false => None,
    };

    let metrics = Arc::new(Metrics::default());
    let gateway = Arc::new(CountingGateway::default());
    let dispatcher = Dispatcher {
        schedule: schedule.clone(),
        gateway: gateway.clone(),
        ledger: None,
        metrics: metrics.clone(),
        config: DispatchConfig {
            max_in_flight: 2048,
            take_batch: 512,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            claim_lead: Duration::ZERO, // no ledger: nothing to claim
            credential: credential.map(|rate| CredentialLimit::new(conn.clone(), &prefix, rate, margin_ms, MAX_LEAD_MS)),
        },
        wake: Arc::new(Notify::new()),
    };
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let run = tokio::spawn(dispatcher.run(stop));
    while metrics.finished() < total as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "dispatch did not finish");
    }
    let dispatch_secs = started.elapsed().as_secs_f64();
    let dispatch_trips = schedule.round_trips() - enqueue_trips;
    let _ = stop_tx.send(true);
    run.await?;

    // Clean up what the benchmark left in Redis (a cluster is the script's to stop).
    if !cluster {
        let mut conn = conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
        for chunk in keys.chunks(1000) {
            redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await?;
        }
    }
    let per_shard = gateway.per_shard(&schedule);
    let even = total as f64 / schedule.shard_count() as f64;

    let mut figures = serde_json::json!({ "scenario": "our-dispatch", "accounts": accounts, "messages": total, "marginMs": margin_ms,
            "dispatchMessagesPerSec": (total as f64 / dispatch_secs).round(),
            "dispatchRoundTripsPerMessage": dispatch_trips as f64 / total as f64,
            "enqueueMessagesPerSec": (total as f64 / enqueue_secs).round(),
            "enqueueRoundTripsPerMessage": enqueue_trips as f64 / total as f64,
            "roundTripsPerMessage": schedule.round_trips() as f64 / total as f64,
            "delivered": gateway.calls(), "distinctDelivered": gateway.distinct(),
            "redis": if cluster { "cluster" } else { "single" }, "shards": schedule.shard_count(), "waitReplicas": wait_replicas,
            "shardMaxOverEven": per_shard.iter().max().copied().unwrap_or(0) as f64 / even,
            "shardMinOverEven": per_shard.iter().min().copied().unwrap_or(0) as f64 / even,
    });
    if let Some(rate) = credential {
        figures["scenario"] = "our-dispatch-credential-limit".into();
        figures.as_object_mut().expect("an object").extend(gateway.credential_figures(rate, margin_ms, accounts).as_object().expect("an object").clone());
    }
    println!("{figures}");
    Ok(())
}

/// Sends nothing; counts the calls and the distinct messages, so that the summary can
/// tell a message sent twice (or one never sent) from a fast run.
#[derive(Default)]
struct CountingGateway {
    seen: Mutex<(u64, HashSet<String>, std::collections::HashMap<String, u64>)>,
    /// Each delivery's time and account, in order.
    log: Mutex<Vec<(Instant, String)>>,
}

impl CountingGateway {
    fn calls(&self) -> u64 {
        self.seen.lock().expect("gateway lock").0
    }

    fn distinct(&self) -> usize {
        self.seen.lock().expect("gateway lock").1.len()
    }

    /// Under the credential's limit `rate`: the most deliveries in any window, the rate
    /// (per s) against the limit's, and the accounts' least and most deliveries among
    /// the first half (against an even share).
    fn credential_figures(&self, rate: RateLimit, margin_ms: u64, accounts: usize) -> serde_json::Value {
        let log = self.log.lock().expect("gateway log");
        let window = Duration::from_millis(rate.window_ms);
        let (mut worst, mut j) = (0, 0);
        for i in 0..log.len() {
            while log[i].0.duration_since(log[j].0) >= window {
                j += 1;
            }
            worst = worst.max(i - j + 1);
        }
        let span = log.last().zip(log.first()).map_or(0.0, |(l, f)| l.0.duration_since(f.0).as_secs_f64());
        let mut shares: std::collections::HashMap<&str, u64> = Default::default();
        for (_, account) in &log[..log.len() / 2] {
            *shares.entry(account).or_default() += 1;
        }
        let even = (log.len() / 2) as f64 / accounts as f64;
        let least = if shares.len() < accounts { 0 } else { shares.values().min().copied().unwrap_or(0) };
        serde_json::json!({
            "credentialMax": rate.max, "credentialWindowMs": rate.window_ms, "worstWindow": worst,
            "sendsPerSec": ((log.len() - 1) as f64 / span).round(),
            "limitPerSec": (f64::from(rate.max) * 1000.0 / (rate.window_ms + margin_ms) as f64).round(),
            "firstHalfShareMinOverEven": least as f64 / even,
            "firstHalfShareMaxOverEven": shares.values().max().copied().unwrap_or(0) as f64 / even,
        })
    }

    /// Deliveries per shard of the schedule.
    fn per_shard(&self, schedule: &Schedule) -> Vec<u64> {
        let mut counts = vec![0; schedule.shard_count()];
        for (account, n) in &self.seen.lock().expect("gateway lock").2 {
            counts[schedule.shard_of(account)] += n;
        }
        counts
    }
}

impl Gateway for CountingGateway {
    async fn deliver(&self, m: &QueueMessage) -> Delivery {
        let mut seen = self.seen.lock().expect("gateway lock");
        seen.0 += 1;
        seen.1.insert(m.id.clone());
        *seen.2.entry(m.creator_id.clone()).or_default() += 1;
        self.log.lock().expect("gateway log").push((Instant::now(), m.creator_id.clone()));
        Delivery::Sent { gateway_id: None }
    }
}
