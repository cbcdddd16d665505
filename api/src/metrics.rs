//! What `/metrics` shows, in the Prometheus text format: requests by method and status, their
//! latency, log lines ingested, Kubernetes watch errors, and (read from the database at each scrape, so every replica
//! agrees) jobs by state and the queue's depth.

use std::time::Duration;

use ckrv_wit::types::JobState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    log_lines: Counter,
    jobs: Family<StateLabels, Gauge>,
    queued: Gauge,
    watch_errors: Family<ResourceLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ckrv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        // 1 ms to about 16 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "http_request_duration_seconds",
            "How long requests took to answer (a log stream: until its headers)",
            latency.clone(),
        );
        let log_lines = Counter::default();
        registry.register(
            "log_lines_ingested",
            "Job log lines stored",
            log_lines.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let queued = Gauge::default();
        registry.register("queue_depth", "Jobs waiting for a worker", queued.clone());
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "kubernetes_watch_errors",
            "Errors watching or handling the Kubernetes objects of jobs, by resource",
            watch_errors.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            log_lines,
            jobs,
            queued,
            watch_errors,
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// One error of the Kubernetes dispatcher's watch of `resource` (`pods`, `jobs`).
    pub fn kubernetes_watch_error(&self, resource: &str) {
        self.watch_errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    pub fn log_lines_ingested(&self, lines: u64) {
        self.log_lines.inc_by(lines);
    }

    /// The text format, with the job counts just read.
    pub fn render(&self, jobs_by_state: &[(JobState, i64)]) -> Result<String, std::fmt::Error> {
        for state in JobState::ALL {
            let count = jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.as_str().to_owned(),
                })
                .set(count);
            if state == JobState::Pending {
                self.queued.set(count);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
