//! Histograms of the data path: fixed buckets of relaxed atomic counters,
//! one observation costs a few compares and two atomic adds.
//!
//! Hand-written rather than `prometheus_client`'s `Histogram` (whose
//! `observe` takes a lock, and whose `Family` looks labels up in a locked
//! map): these live in the service and backend they measure, so the
//! connection path never touches the metrics registry. `status.rs`
//! renders them with prometheus-client's encoder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds (seconds) of the backend connect time buckets: 100 µs to
/// about 3.3 s, doubling (`timeouts.connect` is at most a minute).
pub const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192,
    1.6384, 3.2768,
];

/// Upper bounds (seconds) of the connection duration buckets: 1 ms to 4 h.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// A histogram over fixed bucket bounds.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// The bounds in nanoseconds (compared on the hot path).
    bounds_ns: Box<[u64]>,
    /// Per bucket (not cumulative), the last one for above every bound.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub sum_seconds: f64,
    pub count: u64,
    /// (upper bound, count in that bucket alone), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            // (bounds are small positive constants: the cast cannot overflow)
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .bounds_ns
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(self.bounds_ns.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(self.counts.iter())
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed)),
        ));
        Snapshot {
            // the count is the buckets' sum, so the two always agree
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// Encodes one histogram family, one series per label set.
pub fn encode<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, &Snapshot)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, s) in series {
        m.encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(s.sum_seconds, s.count, &s.buckets, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // on the bound: le is inclusive
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets, vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)]);
        assert!((s.sum_seconds - 3.0065).abs() < 1e-9);
    }

    #[test]
    fn encodes_cumulative_buckets() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        let s = h.snapshot();
        let mut out = String::new();
        struct C(Snapshot);
        impl std::fmt::Debug for C {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("C")
            }
        }
        impl prometheus_client::collector::Collector for C {
            fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
                encode(&mut enc, "x_seconds", "help", &[(vec![("service", "web")], &self.0)])
            }
        }
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(C(s)));
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("# TYPE x_seconds histogram"), "{out}");
        assert!(out.contains("x_seconds_count{service=\"web\"} 2"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.01\",service=\"web\"} 2"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\",service=\"web\"} 2"), "{out}");
    }
}
