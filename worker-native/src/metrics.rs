//! CloudWatch metrics (docs/design.md §7): counted in process and flushed in one batched
//! `PutMetricData` per interval (and on shutdown), never a call per message. Every
//! metric carries the one `Environment` dimension, so alarms match.

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};

/// Counters since the last flush.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub processed: u64,
    pub failed: u64,
    pub retried: u64,
    pub deferrals: u64,
    /// Send latency in ms: count, sum, min, max.
    pub latency: Option<(u64, f64, f64, f64)>,
}

/// Gauges read at flush time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub queue_depth: u64,
    pub dlq_count: u64,
    pub scheduled_backlog: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    /// Messages sent or failed for good since start (never reset by a flush).
    finished: std::sync::atomic::AtomicU64,
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

    pub fn latency(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        self.with(|c| {
            c.latency = Some(match c.latency {
                None => (1, ms, ms, ms),
                Some((n, sum, min, max)) => (n + 1, sum + ms, min.min(ms), max.max(ms)),
            })
        });
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
            if let Some((n, sum, min, max)) = c.latency {
                now.latency = Some(match now.latency {
                    None => (n, sum, min, max),
                    Some((n2, s2, mi2, ma2)) => (n + n2, sum + s2, min.min(mi2), max.max(ma2)),
                });
            }
        });
    }
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
    ];
    if let Some((n, sum, min, max)) = c.latency {
        let stats = StatisticSet::builder().sample_count(n as f64).sum(sum).minimum(min).maximum(max).build();
        out.push(MetricDatum::builder().metric_name("SendLatency").dimensions(dim).statistic_values(stats).unit(StandardUnit::Milliseconds).build());
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
        assert_eq!(c.latency, Some((2, 40.0, 10.0, 30.0)));
        assert_eq!(m.take().processed, 0);
        m.restore(c);
        let d = data(&m.take(), &Gauges::default(), "test");
        assert_eq!(d.len(), 8);
        assert!(d.iter().all(|x| x.dimensions().len() == 1 && x.dimensions()[0].value() == Some("test")));
    }
}
