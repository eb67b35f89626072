//! Prometheus metrics. Handles are created when a configuration is compiled, so the request
//! path only increments atomics: no registry look-up and no lock per request.
//!
//! Request counters are per (Ingress, Service) and status class, but a series is exposed only
//! once it has counted a request: a proxy with 10,000 idle Ingresses exposes none of them,
//! instead of 150,000 zeros (16 MB per scrape). A pair's counters survive configuration
//! swaps, and are dropped when a configuration no longer has the pair.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub ingress: String,
    pub service: String,
    pub status_class: String,
}

/// A histogram of atomics (prometheus-client's own takes a lock per observation).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer atomic.
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &[f64]) -> Self {
        AtomicHistogram {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records a duration in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::MAX,
            self.counts[self.bounds.len()].load(Ordering::Relaxed),
        ));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The request counters of every (Ingress, Service) pair a configuration routes to.
#[derive(Debug, Default)]
pub struct RequestCounters {
    inner: Mutex<PairTable>,
    /// Bumped by each prune: pairs not asked for (or kept) since are dropped. Outside the
    /// lock so that a compile keeping a cached chunk stamps its counters with no look-up.
    round: AtomicU64,
}

#[derive(Debug, Default)]
struct PairTable {
    /// Ingress → Service → counters (which carry the round that last asked for them), so a
    /// look-up needs no owned key and a configuration's compile allocates only for new pairs.
    pairs: HashMap<String, HashMap<String, StatusCounters>>,
}

impl RequestCounters {
    /// The counters of one pair, created if new; the same counters as before otherwise, so a
    /// configuration swap keeps counting where the last one was.
    fn get(&self, ingress: &str, service: &str) -> StatusCounters {
        let mut t = match self.inner.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let round = self.round.load(Ordering::Relaxed);
        if let Some(c) = t.pairs.get(ingress).and_then(|m| m.get(service)) {
            c.0.asked.store(round, Ordering::Relaxed);
            return c.clone();
        }
        let c = StatusCounters::default();
        c.0.asked.store(round, Ordering::Relaxed);
        t.pairs
            .entry(ingress.to_string())
            .or_default()
            .insert(service.to_string(), c.clone());
        c
    }

    /// Marks counters a configuration still counts into (got from [`Self::get`] by an earlier
    /// compile) as asked for, without looking them up.
    fn keep(&self, c: &StatusCounters) {
        c.0.asked
            .store(self.round.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Forgets pairs not asked for since the last prune.
    fn prune(&self) {
        let mut t = match self.inner.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let round = self.round.load(Ordering::Relaxed);
        t.pairs.retain(|_, services| {
            services.retain(|_, c| c.0.asked.load(Ordering::Relaxed) == round);
            !services.is_empty()
        });
        self.round.store(round + 1, Ordering::Relaxed);
    }

    /// Series that have counted something, for tests and the exposition.
    pub fn value(&self, ingress: &str, service: &str, status_class: usize) -> Option<u64> {
        let t = self.inner.lock().ok()?;
        let c = t.pairs.get(ingress)?.get(service)?;
        Some(
            c.0.classes
                .get(status_class.checked_sub(1)?)?
                .load(Ordering::Relaxed),
        )
    }
}

impl EncodeMetric for RequestCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let Ok(t) = self.inner.lock() else {
            return Ok(());
        };
        let mut rows: Vec<(&str, &str, usize, u64)> = Vec::new();
        for (ingress, services) in &t.pairs {
            for (service, c) in services {
                for (i, n) in c.0.classes.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        rows.push((ingress, service, i, n));
                    }
                }
            }
        }
        rows.sort_unstable();
        for (ingress, service, i, n) in rows {
            let labels = RequestLabels {
                ingress: ingress.to_string(),
                service: service.to_string(),
                status_class: format!("{}xx", i + 1),
            };
            encoder
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct ProxyMetrics {
    pub registry: Registry,
    pub requests: Arc<RequestCounters>,
    pub upstream_latency: Arc<AtomicHistogram>,
    pub open_connections: Gauge,
    pub config_generation: Gauge,
    pub config_apply_seconds: Arc<AtomicHistogram>,
    pub tls_handshakes: Counter,
    /// Client connections the HTTP/1.1 relay handed to hyper.
    pub relay_handovers: Counter,
    /// Connections closed at `--max-connections` to admit a new client.
    pub connections_closed_for_room: Counter,
    /// New connections dropped at `--max-connections`, every open one being busy.
    pub connections_refused: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate_proxy");
        let requests = Arc::new(RequestCounters::default());
        registry.register(
            "requests",
            "Requests answered, by Ingress, Service and status class (a series appears with its first request)",
            ArcMetric(requests.clone()),
        );
        let latency_bounds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let upstream_latency = Arc::new(AtomicHistogram::new(&latency_bounds));
        registry.register(
            "upstream_response_seconds",
            "Time from sending a request upstream to its response headers",
            ArcMetric(upstream_latency.clone()),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the configuration being served",
            config_generation.clone(),
        );
        let config_apply_seconds = Arc::new(AtomicHistogram::new(&[
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ]));
        registry.register(
            "config_apply_seconds",
            "Time to compile and swap in a configuration",
            ArcMetric(config_apply_seconds.clone()),
        );
        let tls_handshakes = Counter::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes started (certificate selections)",
            tls_handshakes.clone(),
        );
        let relay_handovers = Counter::default();
        registry.register(
            "http1_relay_handovers",
            "Client connections the HTTP/1.1 relay handed to the general path (request bodies, upgrades, HTTP/2, HTTP/1.0, local answers)",
            relay_handovers.clone(),
        );
        let connections_closed_for_room = Counter::default();
        registry.register(
            "connections_closed_for_room",
            "Client connections waiting for a request that were closed at --max-connections to admit a new client",
            connections_closed_for_room.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "New client connections dropped at --max-connections because every open one had a request in flight",
            connections_refused.clone(),
        );
        ProxyMetrics {
            registry,
            relay_handovers,
            connections_closed_for_room,
            connections_refused,
            requests,
            upstream_latency,
            open_connections,
            config_generation,
            config_apply_seconds,
            tls_handshakes,
        }
    }
}

impl ProxyMetrics {
    /// Counters for one (Ingress, Service), one per status class 1xx..5xx. Touched only when
    /// a configuration is compiled, never per request.
    pub fn status_counters(&self, ingress: &str, service: &str) -> StatusCounters {
        self.requests.get(ingress, service)
    }

    /// Keeps counters an earlier compile got through the next prune, with no look-up: a
    /// reused rule chunk's counters are the same pairs.
    pub fn keep_counters(&self, c: &StatusCounters) {
        self.requests.keep(c);
    }

    /// Drops the request counters of (Ingress, Service) pairs the configuration just
    /// compiled no longer has, so a cluster with churning Ingresses does not grow the
    /// exposition (and the proxy's memory) forever.
    pub fn prune_request_counters(&self) {
        self.requests.prune();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Pre-resolved request counters, indexed by status class.
#[derive(Debug, Clone, Default)]
pub struct StatusCounters(Arc<PairCounters>);

#[derive(Debug, Default)]
struct PairCounters {
    classes: [AtomicU64; 5],
    /// The prune round that last asked for this pair (see [`RequestCounters::prune`]).
    asked: AtomicU64,
}

impl StatusCounters {
    pub fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0.classes[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether both count into the same series.
    pub fn same(&self, other: &StatusCounters) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Registers a shared metric.
#[derive(Debug)]
struct ArcMetric<M>(Arc<M>);

impl<M: EncodeMetric> EncodeMetric for ArcMetric<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}
