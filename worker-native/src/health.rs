//! `GET /healthz` (the process runs) and `GET /readyz` (Redis and SQS answer) for ECS
//! health checks and load balancers; `GET /stats`, the calls made per message; and
//! [`check`], the `worker-native healthcheck` command that asks a running worker's
//! `/healthz`, so that a container image needs no shell or curl for its health check.
//! The container's health check is liveness, not readiness: a worker that cannot reach
//! Redis or SQS (an ElastiCache failover, a NAT blip) pauses and resumes by itself, and
//! ECS replacing every task at once for it would only add an outage.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::ingest::IngestStats;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::schedule::Schedule;

#[derive(Clone)]
pub struct Probes {
    pub schedule: Schedule,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub ingest: Arc<IngestStats>,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
}

/// Calls made per part since start: what the ingest-cost benchmark reads.
async fn stats(State(p): State<Probes>) -> Json<Value> {
    Json(json!({
        "messagesIngested": p.ingest.messages.load(Ordering::Relaxed),
        "messagesFinished": p.metrics.finished(),
        "sqsCalls": p.ingest.sqs_calls.load(Ordering::Relaxed),
        "dynamodbCalls": p.ledger.calls(),
        "redisRoundTrips": p.schedule.round_trips(),
    }))
}

/// How long each dependency may take to answer a readiness probe: a stalled Redis or
/// SQS is not ready, and the probe answers within its own timeout (ECS: 5 s).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn ready(State(p): State<Probes>) -> (StatusCode, Json<Value>) {
    let answers = |r: Result<bool, tokio::time::error::Elapsed>| r.unwrap_or(false);
    let (redis, sqs) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, async { p.schedule.ping().await.is_ok() }),
        tokio::time::timeout(PROBE_TIMEOUT, async { p.sqs.get_queue_attributes().queue_url(&p.queue_url).send().await.is_ok() }),
    );
    let (redis, sqs) = (answers(redis), answers(sqs));
    let status = if redis && sqs { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": redis && sqs, "redis": redis, "sqs": sqs})))
}

/// Serves the probes on all interfaces (ECS checks come from outside the container)
/// until `shutdown`.
pub async fn serve(port: u16, probes: Probes, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/stats", get(stats))
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| anyhow::anyhow!("HEALTH_PORT {port}: {e}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// Asks the worker listening on `127.0.0.1:port` whether it is alive (`GET /healthz`
/// answered 200), within `timeout`. Plain HTTP/1.0 over a socket: no runtime needed.
pub fn check(port: u16, timeout: std::time::Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("nothing answers on port {port}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).and_then(|_| stream.set_write_timeout(Some(timeout))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| format!("request failed: {e}"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("no answer: {e}"))?;
    let status = answer.split_whitespace().nth(1).unwrap_or("none");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if status == "200" {
        Ok(())
    } else {
        Err(format!("not alive (status {status}): {body}"))
    }
}
