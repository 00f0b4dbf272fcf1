//! Prometheus histograms fed with the data cores' bucket counts: each core
//! counts its latencies into fixed buckets (no lock, no allocation) and
//! hands them over every interval; the control plane adds them here and
//! exposes cumulative `_bucket`, `_sum` and `_count` series that
//! `histogram_quantile` aggregates across pods.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::BTreeMap;
use std::sync::Mutex;
use ultragate_dataplane::stats::{Buckets, DURATION_BUCKETS_US};

/// One histogram family, labelled.
pub struct HistogramFamily {
    desc: Desc,
    labels: Vec<String>,
    series: Mutex<BTreeMap<Vec<String>, Buckets>>,
}

impl HistogramFamily {
    /// A family `name` (in seconds) with these label names.
    pub fn new(name: &str, help: &str, labels: &[&str]) -> HistogramFamily {
        let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        HistogramFamily {
            desc: Desc::new(name.into(), help.into(), labels.clone(), Default::default())
                .expect("valid metric"),
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn series(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<String>, Buckets>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the series of `values` exist (at zero), so `increase()` sees
    /// its first observations.
    pub fn touch(&self, values: &[&str]) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        self.series().entry(key).or_default();
    }

    /// Removes the series whose label values `keep` refuses (a server
    /// that left the config).
    pub fn retain(&self, keep: impl Fn(&[String]) -> bool) {
        self.series().retain(|values, _| keep(values));
    }

    /// Adds counts to the series of `values`.
    pub fn add(&self, values: &[&str], b: &Buckets) {
        let key = values.iter().map(|v| (*v).to_owned()).collect();
        self.series().entry(key).or_default().merge(b);
    }
}

impl Collector for HistogramFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        for (values, b) in self.series().iter() {
            let mut h = Histogram::default();
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(DURATION_BUCKETS_US.len());
            for (bound, n) in DURATION_BUCKETS_US.iter().zip(b.counts) {
                cumulative += n;
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound as f64 / 1e6);
                bucket.set_cumulative_count(cumulative);
                buckets.push(bucket);
            }
            h.set_bucket(buckets);
            h.set_sample_count(b.count());
            h.set_sample_sum(b.sum_us as f64 / 1e6);
            let mut m = Metric::default();
            let labels = self
                .labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value(value.clone());
                    pair
                })
                .collect();
            m.set_label(labels);
            m.set_histogram(h);
            family.mut_metric().push(m);
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = HistogramFamily::new("t_seconds", "test", &["cache"]);
        let mut b = Buckets::default();
        b.record(40);
        b.record(700);
        b.record(20_000_000);
        h.add(&["hit"], &b);
        h.touch(&["miss"]);
        let r = Registry::new();
        r.register(Box::new(h)).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("# TYPE t_seconds histogram"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{cache=\"hit\",le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{cache=\"hit\",le=\"0.001\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{cache=\"hit\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("t_seconds_count{cache=\"hit\"} 3"), "{text}");
        assert!(text.contains("t_seconds_count{cache=\"miss\"} 0"), "{text}");
    }
}
