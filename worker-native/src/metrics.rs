//! CloudWatch metrics (docs/design.md §7): counted in process and flushed in one batched
//! `PutMetricData` per interval (and on shutdown), never a call per message. Every
//! metric carries the one `Environment` dimension, so alarms match.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

/// CloudWatch takes at most 150 distinct values in one datum.
const MAX_VALUES: usize = 150;

/// Counters since the last flush.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub deferrals: u64,
    /// Send latency: calls per latency in ms, rounded (`rounded_ms`). A histogram, not a
    /// statistic set: CloudWatch computes no percentile of a set whose minimum and maximum
    /// differ, and the alarm and the dashboard read the p99.
    pub latency: BTreeMap<u64, u64>,
    /// Webhook events delivered (an endpoint's 2xx), and attempts that failed.
    pub webhook_deliveries: u64,
    pub webhook_failures: u64,
}

/// Gauges read at flush time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub queue_depth: u64,
    pub dlq_count: u64,
    pub scheduled_backlog: u64,
    /// Seconds since the oldest delivery this worker is making (or retrying) became due.
    pub webhook_oldest_age_s: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    /// Messages sent or failed for good since start (never reset by a flush).
    finished: std::sync::atomic::AtomicU64,
    /// The webhook deliveries under way here: a delivery's own number -> when it became
    /// due (ms), for the age of the oldest.
    webhooks: Mutex<BTreeMap<u64, u64>>,
    next_delivery: std::sync::atomic::AtomicU64,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().expect("metrics lock"));
    }

    pub fn processed(&self, n: u64) {
        self.finished.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.with(|c| c.processed += n);
    }

    pub fn failed(&self, n: u64) {
        self.finished.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.with(|c| c.failed += n);
    }

    pub fn finished(&self) -> u64 {
        self.finished.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn retried(&self, n: u64) {
        self.with(|c| c.retried += n);
    }

    pub fn deferred(&self, n: u64) {
        self.with(|c| c.deferrals += n);
    }

    /// A webhook attempt's outcome: delivered, or failed (tried again or given up).
    pub fn webhook_attempt(&self, delivered: bool) {
        self.with(|c| if delivered { c.webhook_deliveries += 1 } else { c.webhook_failures += 1 });
    }

    /// A delivery due since `due_ms` begins: its number, for [`Metrics::webhook_done`].
    pub fn webhook_begun(&self, due_ms: u64) -> u64 {
        let n = self.next_delivery.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.webhooks.lock().expect("metrics lock").insert(n, due_ms);
        n
    }

    /// That delivery ended (delivered, given up, or left to another worker).
    pub fn webhook_done(&self, n: u64) {
        self.webhooks.lock().expect("metrics lock").remove(&n);
    }

    /// Seconds since the oldest delivery still under way here became due (0: none).
    pub fn webhook_oldest_age_s(&self, now_ms: u64) -> u64 {
        self.webhooks.lock().expect("metrics lock").values().min().map_or(0, |&at| now_ms.saturating_sub(at) / 1000)
    }

    pub fn latency(&self, d: Duration) {
        self.with(|c| *c.latency.entry(rounded_ms(d)).or_default() += 1);
    }

    /// Takes the counts so far, leaving zeros.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut self.counts.lock().expect("metrics lock"))
    }

    /// Puts counts back after a failed flush, so nothing is lost.
    pub fn restore(&self, c: Counts) {
        self.with(|now| {
            now.processed += c.processed;
            now.failed += c.failed;
            now.retried += c.retried;
            now.deferrals += c.deferrals;
            now.webhook_deliveries += c.webhook_deliveries;
            now.webhook_failures += c.webhook_failures;
            for (ms, n) in c.latency {
                *now.latency.entry(ms).or_default() += n;
            }
        });
    }
}

/// A latency in ms to two significant digits, never finer than a whole ms (1234 ms ->
/// 1200 ms; within half a ms below 100 ms, within 5 % above): 100 values below 100 ms and
/// 90 a decade above, so a flush's histogram stays a few datums however many calls it counts.
fn rounded_ms(d: Duration) -> u64 {
    let ms = d.as_secs_f64() * 1000.0;
    let mut step = 1.0;
    while ms >= 100.0 * step {
        step *= 10.0;
    }
    ((ms / step).round() * step) as u64
}

/// The metric data for one flush.
pub fn data(c: &Counts, g: &Gauges, environment: &str) -> Vec<MetricDatum> {
    let dim = Dimension::builder().name("Environment").value(environment).build();
    let datum = |name: &str, value: f64, unit: StandardUnit| MetricDatum::builder().metric_name(name).dimensions(dim.clone()).value(value).unit(unit).build();
    let mut out = vec![
        datum("QueueDepth", g.queue_depth as f64, StandardUnit::Count),
        datum("DLQCount", g.dlq_count as f64, StandardUnit::Count),
        datum("ScheduledBacklog", g.scheduled_backlog as f64, StandardUnit::Count),
        datum("MessagesProcessed", c.processed as f64, StandardUnit::Count),
        datum("MessagesFailed", c.failed as f64, StandardUnit::Count),
        datum("MessagesRetried", c.retried as f64, StandardUnit::Count),
        datum("RateLimitDeferrals", c.deferrals as f64, StandardUnit::Count),
        datum("WebhookDeliveries", c.webhook_deliveries as f64, StandardUnit::Count),
        datum("WebhookFailures", c.webhook_failures as f64, StandardUnit::Count),
        datum("WebhookOldestEventAge", g.webhook_oldest_age_s as f64, StandardUnit::Seconds),
    ];
    let latency: Vec<(u64, u64)> = c.latency.iter().map(|(&ms, &n)| (ms, n)).collect();
    for part in latency.chunks(MAX_VALUES) {
        let (values, counts) = part.iter().map(|&(ms, n)| (ms as f64, n as f64)).unzip();
        out.push(
            MetricDatum::builder()
                .metric_name("SendLatency")
                .dimensions(dim.clone())
                .set_values(Some(values))
                .set_counts(Some(counts))
                .unit(StandardUnit::Milliseconds)
                .build(),
        );
    }
    out
}

/// Sends one flush.
pub async fn put(client: &aws_sdk_cloudwatch::Client, namespace: &str, data: Vec<MetricDatum>) -> anyhow::Result<()> {
    client.put_metric_data().namespace(namespace).set_metric_data(Some(data)).send().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_restores() {
        let m = Metrics::default();
        m.processed(3);
        m.latency(Duration::from_millis(10));
        m.latency(Duration::from_millis(30));
        let c = m.take();
        assert_eq!(c.processed, 3);
        assert_eq!(c.latency, BTreeMap::from([(10, 1), (30, 1)]));
        assert_eq!(m.take().processed, 0);
        // A failed flush's counts go back, merged with those counted meanwhile.
        m.latency(Duration::from_micros(10_200));
        m.restore(c);
        let c = m.take();
        assert_eq!(c.latency, BTreeMap::from([(10, 2), (30, 1)]));
        let d = data(&c, &Gauges::default(), "test");
        assert_eq!(d.len(), 11);
        assert!(d.iter().all(|x| x.dimensions().len() == 1 && x.dimensions()[0].value() == Some("test")));
    }

    #[test]
    fn latency_is_a_histogram_of_rounded_values() {
        assert_eq!([1234, 99_600, 42_400, 995_000, 150].map(|us| rounded_ms(Duration::from_micros(us))), [1, 100, 42, 1000, 0]);
        assert_eq!(rounded_ms(Duration::from_millis(1234)), 1200);
        // 0.3 ms to ~6.6 s, spread evenly on a log scale.
        let samples: Vec<Duration> = (0..2000).map(|i| Duration::from_secs_f64(0.0003 * 1.005f64.powi(i))).collect();
        let m = Metrics::default();
        for &d in &samples {
            let (ms, r) = (d.as_secs_f64() * 1000.0, rounded_ms(d) as f64);
            assert!((r - ms).abs() <= (0.05 * ms).max(0.5), "{ms} ms rounded to {r}");
            m.latency(d);
        }
        let d = data(&m.take(), &Gauges::default(), "test");
        let latency: Vec<_> = d.iter().filter(|x| x.metric_name() == Some("SendLatency")).collect();
        assert!(latency.len() > 1, "more distinct values than one datum takes: {}", latency.len());
        assert!(latency.iter().all(|x| x.values().len() <= MAX_VALUES && x.values().len() == x.counts().len() && x.statistic_values().is_none()));
        let values: Vec<f64> = latency.iter().flat_map(|x| x.values().iter().copied()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "each value once");
        assert_eq!(latency.iter().flat_map(|x| x.counts()).sum::<f64>(), samples.len() as f64);
    }
}
