//! Wiring: builds the clients from the configuration, starts ingest, dispatch, the
//! wake-up listener, the lease reclaimer, the metrics flusher and the health server,
//! and shuts them down in order on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::config::GatewayKind;
use crate::connection::{seed_urls, RedisConn};
use crate::credential::CredentialLimit;
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::gateway::accounts::VendorAccounts;
use crate::gateway::onlyfansapi::OnlyFansApiGateway;
use crate::gateway::{DryRunGateway, Gateway, HttpGateway};
use crate::ingest::{Ingest, IngestGate, IngestStats};
use crate::ledger::Ledger;
use crate::metrics::{self, Gauges, Metrics};
use crate::schedule::{Limits, Schedule};
use crate::{health, ledger};

pub fn schedule(config: &Config) -> anyhow::Result<Schedule> {
    let limits = Limits { rate: config.rate, burst: config.burst, margin_ms: config.margin_ms };
    let conn = RedisConn::open(&config.redis_url, config.redis_cluster)?;
    Ok(Schedule::sharded(conn, config.redis_prefix.clone(), limits, config.schedule_shards, config.redis_cluster).with_replicas(config.redis_wait_replicas))
}

/// Checks the shard count against the one recorded in Redis: a mismatch stops the
/// worker; Redis down only delays the check to every take (take.lua checks each
/// shard's epoch).
async fn check_shards(schedule: &Schedule) -> anyhow::Result<()> {
    match schedule.check_shards().await {
        Ok(None) => Ok(()),
        Ok(Some(mismatch)) => anyhow::bail!(mismatch),
        Err(e) => {
            tracing::warn!(error = %e, "Redis unreachable at start: the shard count is checked by every take");
            Ok(())
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    if !config.enabled {
        anyhow::bail!("RATE_LIMITER_ENABLED is not true: refusing to send without the rate limiter");
    }
    let aws = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    // The events of the outcomes the ledger records go to the outbox (`crate::outbox`),
    // held by the worker that wrote them for two deliveries' time and 5 s (it renews the
    // lease before each wait to try again).
    let event_lease_ms = 2 * config.webhook_timeout.as_millis() as u64 + 5_000;
    let (events, written_events) = crate::events::EventSink::new(event_lease_ms);
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let ledger = Ledger::new(dynamodb, config.ledger_table.clone(), config.ledger_ttl_days, config.rate).with_events(events.clone());
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&aws);
    let schedule = schedule(&config)?;
    check_shards(&schedule).await?;
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop) = watch::channel(false);

    let ingest_stats = Arc::new(IngestStats::default());
    let ingest_gate = Arc::new(IngestGate::default());
    let mut tasks = tokio::task::JoinSet::new();
    if config.health_port != 0 {
        let probes = health::Probes {
            schedule: schedule.clone(),
            sqs: sqs.clone(),
            queue_url: config.queue_url.clone(),
            ingest: ingest_stats.clone(),
            ledger: ledger.clone(),
            metrics: metrics.clone(),
        };
        let port = config.health_port;
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = health::serve(port, probes, stop).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
    }
    tasks.spawn(listen_for_wakeups(seed_urls(&config.redis_url), schedule.clone(), wake.clone(), stop.clone()));
    tasks.spawn(reclaim_leases(schedule.clone(), stop.clone()));
    if config.ledger_enabled {
        tasks.spawn(crate::recover::rest_campaigns(ledger.clone(), config.campaign_rest_interval, stop.clone()));
    }
    let webhooks =
        crate::webhook::Deliverer::new(config.webhook_timeout, config.webhook_loopback, config.webhook_retry_compress, config.webhook_endpoint_concurrency)?;
    if config.ledger_enabled {
        tasks.spawn(crate::outbox::run(
            ledger.clone(),
            webhooks.clone(),
            events.clone(),
            written_events,
            config.webhook_sweep_interval,
            config.webhook_endpoints_refresh,
            metrics.clone(),
            stop.clone(),
        ));
    }
    let ingest_done: Vec<_> = (0..config.ingest_tasks)
        .map(|_| {
            let ingest = Ingest {
                sqs: sqs.clone(),
                queue_url: config.queue_url.clone(),
                dlq_url: config.dlq_url.clone(),
                schedule: schedule.clone(),
                ledger: config.ledger_enabled.then(|| ledger.clone()),
                metrics: metrics.clone(),
                wake: wake.clone(),
                wait_seconds: config.sqs_wait_seconds,
                stats: ingest_stats.clone(),
                gate: ingest_gate.clone(),
                webhooks: webhooks.clone(),
            };
            tokio::spawn(ingest.run(stop.clone()))
        })
        .collect();
    let dispatch_config = DispatchConfig {
        max_in_flight: config.max_in_flight,
        take_batch: config.take_batch,
        lease: config.lease,
        max_attempts: config.max_attempts,
        retry_base: config.retry_base,
        retry_max: config.retry_max,
        shutdown_grace: config.shutdown_grace,
        claim_lead: config.claim_lead,
        credential: config
            .gateway_rate
            .zip(config.gateway_margin_ms)
            .map(|(rate, margin_ms)| CredentialLimit::new(schedule.connection(), &config.redis_prefix, rate, margin_ms, crate::schedule::MAX_LEAD_MS)),
    };
    if !config.ledger_enabled {
        tracing::warn!("LEDGER_ENABLED=false: outcomes are not recorded in the ledger");
    }
    let ledger_for_dispatch = config.ledger_enabled.then(|| ledger.clone());
    let spawn = |gateway| spawn_dispatch(gateway, &schedule, ledger_for_dispatch.clone(), &metrics, dispatch_config.clone(), &wake, &stop);
    let dispatch_done = match (&config.gateway_url, config.gateway_kind) {
        (Some(url), GatewayKind::Http) => spawn(HttpGateway::new(url.clone(), config.gateway_token.clone(), config.gateway_timeout)?),
        (Some(url), GatewayKind::OnlyFansApi) => {
            let key = config.gateway_token.clone().unwrap_or_default();
            spawn_dispatch(
                OnlyFansApiGateway::new(url.clone(), key, config.gateway_timeout, VendorAccounts::new(ledger_for_dispatch.clone()))?,
                &schedule,
                ledger_for_dispatch.clone(),
                &metrics,
                dispatch_config,
                &wake,
                &stop,
            )
        }
        (None, _) => {
            tracing::warn!("GATEWAY_DRY_RUN=true: messages are logged and recorded sent, not delivered");
            spawn_dispatch(DryRunGateway, &schedule, ledger_for_dispatch.clone(), &metrics, dispatch_config, &wake, &stop)
        }
    };
    let flush = MetricsFlush { client: cloudwatch, config: config.clone(), sqs: sqs.clone(), schedule: schedule.clone(), metrics: metrics.clone() };
    let flusher = tokio::spawn(flush.clone().run(stop.clone()));
    tracing::info!(rate = %config.rate.describe(), burst = config.burst, margin_ms = config.margin_ms, "worker started");

    wait_for_signal().await;
    tracing::info!("shutting down: no new work; finishing what is in flight");
    let _ = stop_tx.send(true);
    for ingest in ingest_done {
        let _ = ingest.await;
    }
    let _ = dispatch_done.await;
    let _ = flusher.await;
    flush.flush().await; // the last counts
    tasks.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn spawn_dispatch<G: Gateway>(
    gateway: G,
    schedule: &Schedule,
    ledger: Option<ledger::Ledger>,
    metrics: &Arc<Metrics>,
    config: DispatchConfig,
    wake: &Arc<Notify>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let d = Dispatcher { schedule: schedule.clone(), gateway: Arc::new(gateway), ledger, metrics: metrics.clone(), config, wake: wake.clone() };
    tokio::spawn(d.run(stop.clone()))
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Wakes the dispatcher when any worker publishes new work (naming the shards that got
/// it); reconnects on its own. On a cluster a message published on any node reaches
/// every node's subscribers, so one node is enough: the next seed after a failure.
async fn listen_for_wakeups(urls: Vec<String>, schedule: Schedule, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let channel = schedule.wake_channel();
    let mut turn = 0;
    while !*stop.borrow() {
        let url = &urls[turn % urls.len().max(1)];
        turn += 1;
        let result = async {
            let mut pubsub = redis::Client::open(url.as_str())?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            schedule.shards_woken("*"); // what was published while unsubscribed is not lost
            wake.notify_one();
            let mut messages = pubsub.on_message();
            while let Some(m) = messages.next().await {
                schedule.shards_woken(&m.get_payload::<String>().unwrap_or_default());
                wake.notify_one();
            }
            Ok::<_, redis::RedisError>(())
        };
        tokio::select! {
            _ = result => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Requeues messages whose worker died mid-send, once a second.
async fn reclaim_leases(schedule: Schedule, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        match schedule.reclaim(1000).await {
            Ok(0) | Err(_) => {}
            Ok(n) => tracing::warn!(count = n, "expired leases: messages back in their queues"),
        }
    }
}

#[derive(Clone)]
struct MetricsFlush {
    client: aws_sdk_cloudwatch::Client,
    config: Config,
    sqs: aws_sdk_sqs::Client,
    schedule: Schedule,
    metrics: Arc<Metrics>,
}

impl MetricsFlush {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.metrics_interval) => self.flush().await,
                _ = stop.changed() => return,
            }
        }
    }

    async fn gauges(&self) -> Gauges {
        let count = |url: String| {
            let sqs = self.sqs.clone();
            async move {
                let r = sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
                    .await
                    .ok()?;
                r.attributes()?.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)?.parse().ok()
            }
        };
        Gauges {
            queue_depth: count(self.config.queue_url.clone()).await.unwrap_or(0),
            dlq_count: count(self.config.dlq_url.clone()).await.unwrap_or(0),
            scheduled_backlog: self.schedule.backlog().await.unwrap_or(0),
            webhook_oldest_age_s: self.metrics.webhook_oldest_age_s(crate::now_ms()),
        }
    }

    async fn flush(&self) {
        if !self.config.metrics_enabled {
            return;
        }
        let counts = self.metrics.take();
        let data = metrics::data(&counts, &self.gauges().await, &self.config.environment);
        if let Err(e) = metrics::put(&self.client, &self.config.namespace, data).await {
            tracing::error!(error = %e, "metrics not published; kept for the next flush");
            self.metrics.restore(counts);
        }
    }
}
