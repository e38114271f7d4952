//! Ingest: long-poll SQS, move each message into its account's schedule in Redis (and
//! its ledger item, when the edge's write did not land), then delete it from SQS. A
//! message is always in SQS, or in Redis with its ledger item, or finished: nothing is
//! deleted before Redis has it. A body that is not a valid message goes to the
//! dead-letter queue at once instead of being retried forever.
//!
//! Every receive counts towards the queue's `maxReceiveCount`, after which SQS moves a
//! message to the dead-letter queue. So when a received batch cannot be scheduled
//! (Redis or the ledger is down), every ingest task of this process stops receiving
//! ([`IngestGate`]) until both answer again, and the batch is put back as fresh copies
//! (their receive count starts again at 0) before the originals are deleted: however
//! long or often Redis or the ledger is down, a valid message never becomes a dead
//! letter. A copy that meets its original later is a duplicate delivery, dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use shared::campaign::CampaignRef;
use shared::message::QueueMessage;
use shared::queue::Incoming;
use tokio::sync::{watch, Notify};

use crate::ledger::{Ledger, Uncounted};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::schedule::Schedule;

pub struct Ingest {
    pub sqs: Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub schedule: Schedule,
    pub ledger: Option<Ledger>,
    pub metrics: Arc<Metrics>,
    /// Wakes this process's dispatcher; other workers hear a Redis publish.
    pub wake: Arc<Notify>,
    pub wait_seconds: i32,
    /// SQS calls made and messages taken in (for `/stats` and the ingest benchmark).
    pub stats: Arc<IngestStats>,
    /// Shared by the ingest tasks of this process: closed while scheduling fails.
    pub gate: Arc<IngestGate>,
    /// Sends webhook endpoints their test events.
    pub webhooks: crate::webhook::Deliverer,
}

/// Closed while what ingest writes to (Redis, the ledger) does not answer, so that no
/// task receives messages it cannot schedule.
#[derive(Debug, Default)]
pub struct IngestGate {
    closed: AtomicBool,
}

impl IngestGate {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn set_closed(&self, closed: bool) {
        self.closed.store(closed, Ordering::Relaxed);
    }
}

/// How often a closed gate checks whether Redis and the ledger answer again.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Counters of the ingest path.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub sqs_calls: AtomicU64,
    pub messages: AtomicU64,
}

/// A queue message's body decoded and checked; why it was refused.
pub fn parse(body: &str) -> Result<Incoming, String> {
    let m = match Incoming::parse(body).map_err(|e| format!("not a queue message: {e}"))? {
        Incoming::Message(m) => m,
        Incoming::Control(c) if c.creator_id.is_empty() => return Err("a control names no creatorId".into()),
        Incoming::Canceled(c) if c.creator_id.is_empty() || !shared::id::is_message_id(&c.id) => {
            return Err("a cancel notice names no creatorId or no message id".into())
        }
        Incoming::Campaign(c) if c.creator_id.is_empty() || !shared::id::is_message_id(&c.campaign) => {
            return Err("a campaign names no creatorId or no campaign id".into())
        }
        other => return Ok(other),
    };
    if !shared::id::is_message_id(&m.id) {
        return Err("id is not a message id".into());
    }
    if m.creator_id.is_empty() || m.recipient_id.is_empty() || m.content.is_empty() {
        return Err("creatorId, recipientId and content are required".into());
    }
    if !(shared::validation::MIN_PRIORITY..=shared::validation::MAX_PRIORITY).contains(&m.priority) {
        return Err("priority out of range".into());
    }
    Ok(Incoming::Message(m))
}

impl Ingest {
    /// Runs until `shutdown`. A receive under way then is finished, not abandoned: an
    /// abandoned long poll can still be handed messages, which would then stay
    /// invisible until their visibility timeout.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        while !*shutdown.borrow() {
            if self.gate.is_closed() {
                self.wait_until_writable(&mut shutdown).await;
                continue;
            }
            match self.poll_once().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::error!(error = %format!("{e:#}"), failures, "ingest failed; messages stay in SQS and are retried");
                    }
                    let delay = Duration::from_millis(200 * u64::from(failures.min(10)));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Waits (receiving nothing) until Redis and the ledger answer, then opens the gate.
    async fn wait_until_writable(&self, shutdown: &mut watch::Receiver<bool>) {
        let started = std::time::Instant::now();
        while !*shutdown.borrow() {
            let redis = self.schedule.ping().await;
            let ledger = match &self.ledger {
                Some(l) => l.ping().await,
                None => Ok(()),
            };
            if redis.is_ok() && ledger.is_ok() {
                if self.gate.is_closed() {
                    self.gate.set_closed(false);
                    tracing::info!(paused_ms = started.elapsed().as_millis() as u64, "Redis and the ledger answer: ingest resumes");
                }
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One receive → schedule → delete cycle; returns how many messages were added.
    pub async fn poll_once(&self) -> anyhow::Result<u64> {
        self.stats.sqs_calls.fetch_add(1, Ordering::Relaxed);
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(self.wait_seconds)
            .send()
            .await?;
        let messages = received.messages();
        if messages.is_empty() {
            return Ok(0);
        }
        tracing::debug!(messages = messages.len(), "received");
        let mut valid = Vec::with_capacity(messages.len());
        let mut controls = Vec::new();
        let mut campaigns = Vec::new();
        let mut canceled = Vec::new();
        let mut valid_received = Vec::with_capacity(messages.len());
        let mut done = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let Some(handle) = m.receipt_handle() else { continue };
            match parse(m.body().unwrap_or_default()) {
                // SQS can hand over one message twice in one receive: the repeat is a
                // duplicate delivery, deleted with the rest (a batch read or transaction
                // naming one item twice would be refused whole).
                Ok(Incoming::Message(q)) if valid.iter().any(|v: &QueueMessage| v.id == q.id && v.generation == q.generation) => {}
                Ok(Incoming::Message(q)) => {
                    valid.push(q);
                    valid_received.push((i.to_string(), m));
                }
                Ok(Incoming::Control(c)) => {
                    controls.push(c);
                    valid_received.push((i.to_string(), m));
                }
                Ok(Incoming::Campaign(c)) => {
                    campaigns.push(c);
                    valid_received.push((i.to_string(), m));
                }
                Ok(Incoming::Canceled(c)) => {
                    canceled.push(c);
                    valid_received.push((i.to_string(), m));
                }
                // Off the send path: a task of its own reads the endpoint and delivers.
                Ok(Incoming::WebhookTest(t)) => self.send_test_event(t),
                Err(reason) => self.dead_letter(m.body().unwrap_or_default(), &reason).await?,
            }
            done.push(DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()?);
        }
        let scheduled = async {
            self.apply_controls(&controls).await.context("account controls not applied")?;
            self.schedule.drop_canceled(&canceled).await.context("Redis: canceled messages not taken off")?;
            self.schedule_campaigns(&campaigns).await?;
            self.schedule_batch(&valid).await
        }
        .await;
        tracing::debug!(ok = scheduled.is_ok(), "scheduled");
        if scheduled.as_ref().is_ok_and(|e| e.added > 0) {
            // Dispatch first, SQS's delete after: an idle account's message goes without
            // waiting for it (a copy left undeleted comes back as a duplicate, dropped).
            self.wake.notify_one();
            if let Err(e) = self.schedule.wake().await {
                tracing::debug!(error = %e, "wake-up not published");
            }
        }
        if scheduled.is_err() {
            // Not the messages' fault: receive nothing more until Redis and the ledger
            // answer, and put these back as copies whose receive count starts at 0. An
            // original whose copy was not made is not deleted.
            self.gate.set_closed(true);
            let not_copied = self.copy_back(&valid_received).await;
            done.retain(|d| !not_copied.iter().any(|id| id == d.id()));
        }
        self.delete(done).await?;
        let enqueued = scheduled.context("could not schedule received messages; ingest pauses until Redis and the ledger answer")?;
        // Waiting for the account's own limit is the schedule's normal work, not a
        // deferral: RateLimitDeferrals counts the gateway's 429s only (dispatch), the
        // sign that the configured limit is faster than the gateway accepts.
        if enqueued.deferred > 0 {
            tracing::debug!(messages = enqueued.deferred, "scheduled behind their accounts' limits");
        }
        if enqueued.duplicates() > 0 {
            tracing::info!(duplicates = enqueued.duplicates(), "duplicate deliveries dropped");
        }
        self.stats.messages.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(enqueued.added)
    }

    /// Delivers a test event (`POST /webhooks/{id}/test`) in a task of its own, retried
    /// on the schedule while this worker lives: a ping, not a record (a worker that
    /// stops drops it; the tenant asks again).
    fn send_test_event(&self, test: shared::webhook::TestEvent) {
        use crate::webhook::Answer;
        let Some(ledger) = self.ledger.clone() else {
            tracing::warn!("a webhook test event needs the ledger (LEDGER_ENABLED=false): dropped");
            return;
        };
        let deliverer = self.webhooks.clone();
        tokio::spawn(async move {
            let endpoint = match ledger.endpoint(&test.creator_id, &test.endpoint_id).await {
                Ok(Some(e)) => e,
                Ok(None) => return tracing::info!(endpoint = %test.endpoint_id, "webhook test event for an endpoint deleted since: dropped"),
                Err(e) => return tracing::warn!(error = %format!("{e:#}"), "webhook test event dropped: its endpoint could not be read"),
            };
            let event = shared::webhook::Event {
                id: test.event_id.clone(),
                kind: shared::webhook::TEST_EVENT.into(),
                timestamp: shared::time::rfc3339_ms(test.at_ms),
                data: serde_json::json!({"endpointId": test.endpoint_id}),
            };
            match crate::outbox::deliver_one(&ledger, &deliverer, &test.creator_id, endpoint.clone(), &event, true, |_| async { true }).await {
                (Answer::Delivered, attempts) => tracing::info!(event = %event.id, endpoint = %endpoint.id, attempts, "webhook test event delivered"),
                (Answer::Gone, _) => tracing::warn!(event = %event.id, endpoint = %endpoint.id, "webhook receiver answered 410: endpoint disabled"),
                (answer, attempts) => tracing::warn!(event = %event.id, endpoint = %endpoint.id, attempts, ?answer, "webhook test event not delivered"),
            }
        });
    }

    /// Holds and releases accounts: in the ledger first (the summary's flag, ordered by
    /// each control's time: a control overtaken by a newer one is not applied), then in
    /// the schedule.
    async fn apply_controls(&self, controls: &[shared::queue::AccountControl]) -> anyhow::Result<()> {
        if controls.is_empty() {
            return Ok(());
        }
        let accounts: Vec<&str> = controls.iter().map(|c| c.creator_id.as_str()).collect();
        let check = || async {
            match &self.ledger {
                Some(ledger) => ledger.apply_controls(controls).await.context("ledger"),
                None => Ok(controls.to_vec()),
            }
        };
        if self.schedule.control_checked(&accounts, check).await? > 0 {
            self.wake.notify_one(); // a resumed account may be due now
        }
        Ok(())
    }

    /// The ledger item of each message (when the edge's write is missing), its count
    /// in the account's backlog, then its place in the schedule. Each step is safe to
    /// repeat when the batch is received again.
    async fn schedule_batch(&self, valid: &[QueueMessage]) -> anyhow::Result<crate::schedule::Enqueued> {
        let mut fresh = std::borrow::Cow::Borrowed(valid);
        if let Some(ledger) = &self.ledger {
            // Every generation is counted once, a finished one too: a rebuild of the
            // schedule may have sent it before its queue copy got here, and its outcome
            // took it out of the backlog already. The count goes at once with the check
            // of the edge's writes (one round trip less before an idle account's send):
            // an item missing is refused by the count, and counted once written.
            let (bodies, uncounted) = futures::future::join(ledger.ensure_bodies(valid), ledger.count_scheduled(valid)).await;
            bodies.context("ledger")?;
            let Uncounted { missing, finished } = uncounted.context("ledger")?;
            if !missing.is_empty() {
                // Written after their bodies, so that an item found always has its body.
                let missing: Vec<QueueMessage> = missing.into_iter().map(|i| valid[i].clone()).collect();
                let written = ledger.write_items(&missing).await.context("ledger")?;
                if written > 0 {
                    tracing::info!(written, "ledger items written for messages the edge could not record");
                }
                // Their items exist now: written by the worker, or by the edge meanwhile.
                ledger.count_scheduled(&missing).await.context("ledger")?;
            }
            if !finished.is_empty() {
                tracing::info!(duplicates = finished.len(), "late duplicate deliveries of finished messages dropped");
                fresh = std::borrow::Cow::Owned(valid.iter().enumerate().filter(|(i, _)| !finished.contains(i)).map(|(_, m)| m.clone()).collect());
            }
        }
        self.schedule.enqueue(&fresh).await.context("Redis")
    }

    /// Fans campaigns out (their messages' ledger items, then the campaign on the
    /// schedule, its content once) or cancels them (off the schedule, then each
    /// waiting message `canceled` in the ledger). Each step is safe to repeat when the
    /// queue message is received again; a campaign already on the schedule is skipped.
    async fn schedule_campaigns(&self, refs: &[CampaignRef]) -> anyhow::Result<()> {
        if refs.is_empty() {
            return Ok(());
        }
        let ledger = self.ledger.as_ref().context("campaigns need the ledger (LEDGER_ENABLED=false)")?;
        for r in refs {
            let Some(c) = ledger.campaign(&r.creator_id, &r.campaign).await.context("ledger")? else {
                tracing::warn!(campaign = %r.campaign, "a queued campaign has no ledger item (it could not be queued, or expired): dropped");
                continue;
            };
            if r.cancel {
                crate::cancel::cancel_campaign(&self.schedule, ledger, &c, &shared::time::rfc3339_ms(now_ms())).await?;
                continue;
            }
            if c.scheduled || c.canceled_at.is_some() {
                continue; // a duplicate delivery, or canceled before it was fanned out
            }
            if !ledger.start_fan_out(&c).await.context("ledger")? {
                tracing::warn!(campaign = %c.campaign.id, "a queued campaign's item was deleted (its queue write seemed to fail): dropped");
                continue;
            }
            let Some(written) = ledger.fan_out(&c).await.context("ledger")? else {
                tracing::info!(campaign = %c.campaign.id, "campaign canceled while it was fanned out");
                continue;
            };
            let added = self.schedule.enqueue_campaign(&c.campaign).await.context("Redis")?;
            ledger.campaign_scheduled(&c).await.context("ledger")?;
            tracing::info!(campaign = %c.campaign.id, recipients = c.total, written, added, "campaign scheduled");
            if added > 0 {
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Deletes received messages that are scheduled, dead-lettered or copied back.
    async fn delete(&self, entries: Vec<DeleteMessageBatchRequestEntry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.stats.sqs_calls.fetch_add(1, Ordering::Relaxed);
        let deleted = self.sqs.delete_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await?;
        for f in deleted.failed() {
            // It will be delivered again and dropped as a duplicate.
            tracing::warn!(code = f.code(), "SQS did not delete a received message");
        }
        Ok(())
    }

    /// Sends copies of received messages (batch entry id, message) to the queue, in one
    /// call; returns the ids of those not copied, which stay as they are and return
    /// after their visibility timeout with one receive more.
    async fn copy_back(&self, received: &[(String, &aws_sdk_sqs::types::Message)]) -> Vec<String> {
        let entries: Vec<_> = received
            .iter()
            .filter_map(|(id, m)| {
                SendMessageBatchRequestEntry::builder().id(id).message_body(m.body()?).set_message_attributes(m.message_attributes().cloned()).build().ok()
            })
            .collect();
        self.stats.sqs_calls.fetch_add(1, Ordering::Relaxed);
        let not_copied: Vec<String> = match self.sqs.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
            Ok(r) => r.failed().iter().map(|f| f.id().to_owned()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "received messages not copied back");
                received.iter().map(|(id, _)| id.clone()).collect()
            }
        };
        if !not_copied.is_empty() {
            tracing::warn!(count = not_copied.len(), "received messages not put back; they return after their visibility timeout");
        }
        not_copied
    }

    async fn dead_letter(&self, body: &str, reason: &str) -> anyhow::Result<()> {
        tracing::error!(reason, "unreadable queue message moved to the dead-letter queue");
        self.stats.sqs_calls.fetch_add(1, Ordering::Relaxed);
        self.sqs
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(body)
            .message_attributes("rejectedBecause", MessageAttributeValue::builder().data_type("String").string_value(reason).build()?)
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bodies_that_are_not_messages() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"id":"x","creatorId":"a","recipientId":"b","content":"c","priority":5,"acceptedAt":"t"}"#).is_err());
        let ok = r#"{"id":"018bcfe5-6800-7fff-bfff-ffffffffffff","creatorId":"a","recipientId":"b","content":"c","priority":5,"acceptedAt":"2026-11-25T00:00:00.000Z"}"#;
        assert!(matches!(parse(ok), Ok(Incoming::Message(m)) if m.generation == 0));
        assert!(parse(&ok.replace("\"priority\":5", "\"priority\":0")).is_err());
    }

    #[test]
    fn reads_account_controls() {
        let pause = r#"{"control":"pause","creatorId":"a","atMs":5}"#;
        assert!(matches!(parse(pause), Ok(Incoming::Control(c)) if c.control == shared::queue::Hold::Pause && c.at_ms == 5));
        assert!(parse(r#"{"control":"stop","creatorId":"a","atMs":5}"#).is_err());
        assert!(parse(r#"{"control":"resume","creatorId":"","atMs":5}"#).is_err());
    }
}
